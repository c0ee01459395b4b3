"""benchmarks/gpu_check.py: its CPU fallback (``--device cpu --tiny``) runs every check and prints every line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
LINES = (
    "probe_overhead B2xS128",
    "step qwen2_audio_7b LoRA",
    "step qwen3_omni_moe_2layer LoRA",
    "audio_mass probe vs eager",
    "vllm_rollout throughput vs generate()",
    "vllm_moe_rollout qwen3_omni_moe thinker",
    "vllm_moe_sync qwen3_omni_moe expert LoRA",
)


@pytest.mark.slow
def test_cpu_fallback_prints_every_check_and_exits_zero():
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1] / "src"), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in LINES:
        found = [ln for ln in lines if name in ln]
        assert len(found) == 1, f"{name!r}: {found or 'not printed'}\n{proc.stdout}"
        assert found[0].startswith(("[PASS]", "[SKIP]")), found[0]
    assert "SDPA kernels plain: " in proc.stdout and "max abs error" in proc.stdout
    summary = lines[-1]
    assert summary.startswith("gpu_check: ") and " 0 failed" in summary


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_check_makes_the_exit_code_non_zero(monkeypatch, capsys):
    gpu_check = _module()

    def bad(opts):
        gpu_check.report("made-up check", "error 1.0 > tolerance", "FAIL")

    monkeypatch.setattr(
        gpu_check, "CHECKS", {"bad": bad, "good": lambda o: gpu_check.report("ok", "1.0x", "PASS")}
    )
    assert gpu_check.main(["--device", "cpu", "--tiny"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] made-up check: error 1.0 > tolerance" in out and "1 passed, 1 failed" in out


def test_real_shapes_on_cpu_are_refused():
    gpu_check = _module()
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu"])


def test_moe_sync_check_skips_without_vllm(monkeypatch, capsys):
    """Without vLLM the Qwen3-Omni expert-sync check prints its two lines as SKIP with the reason, exit code 0."""
    gpu_check = _module()
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **kw: None if name == "vllm" else find_spec(name, *a, **kw),
    )
    assert gpu_check.main(["--device", "cpu", "--tiny", "--only", "vllm_moe_sync"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert lines == [
        "[SKIP] vllm_moe_rollout qwen3_omni_moe thinker + expert LoRA (tiny, float32, colocate): vLLM is not "
        "installed (pip install the vllm extra to run it)",
        "[SKIP] vllm_moe_sync qwen3_omni_moe expert LoRA after one step (tiny, float32, colocate): vLLM is not "
        "installed (pip install the vllm extra to run it)",
    ]
