"""``benchmarks/gpu_check.py``'s ``vllm_moe_sync`` check with the real vLLM CPU engine: its CPU path (engine, audio
rollouts, initial-weight parity, sync payload) passes and the sync is skipped with the reason; and its GPU-only
comparison, run here with a sync that leaves the engine stale, fails (so the check can tell)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm]

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_moe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_run_builds_the_engine_generates_with_audio_and_skips_the_sync():
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1] / "src"), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--only", "vllm_moe_sync"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 2, proc.stdout
    rollout, sync = lines
    assert rollout.startswith(
        "[PASS] vllm_moe_rollout qwen3_omni_moe thinker + expert LoRA (tiny, float32, colocate): engine built, "
        "4 audio rollouts"
    ), rollout
    assert "initial weights: max abs log-prob diff vLLM vs policy" in rollout
    assert "= the loaded checkpoint's names and shapes" in rollout
    assert "vLLM's expert weights are prepacked by its MoE kernel" in rollout  # CPU; on CUDA compared exactly
    assert sync.startswith("[SKIP] vllm_moe_sync qwen3_omni_moe expert LoRA after one step"), sync
    assert "vLLM's CPU engine cannot reload MoE expert weights in a running engine" in sync
    assert proc.stdout.splitlines()[-1].startswith("gpu_check: 1 passed, 0 failed, 1 skipped")


@pytest.mark.slow
def test_the_sync_comparison_fails_when_the_engine_stays_stale(tmp_path, monkeypatch, release_engine):
    """The CUDA-only part (one step, sync, comparisons) on CPU with ``sync_weights`` made a no-op (the CPU engine
    cannot reload experts): the engine's expert weights still differ from the trained payload after the "sync" and
    its log-probs from the policy's, so the check's verdict would be FAIL."""
    from mapo.trainer.rollout.engine import AudioVLLMGeneration

    gpu_check = _gpu_check()
    opts = Namespace(device="cpu", tiny=True, workdir=str(tmp_path), threads=1)
    tol = gpu_check.MOE_SYNC_TOLERANCE["float32"]
    monkeypatch.setattr(AudioVLLMGeneration, "sync_weights", lambda self: None)
    trainer, processor = gpu_check._moe_trainer(opts, tol)
    try:
        res = gpu_check._moe_sync_parity(trainer, processor)
    finally:
        release_engine(trainer)
    assert res["expert_stacks"] == 4  # gate_up_proj and down_proj of 2 layers
    assert res["err"] == res["stale"] > tol and res["expert_effect"] > 0, res
    # the engine's expert weights did not change ("sync" = no-op); the CPU kernel prepacks them, so the CPU verdict
    # is the log-prob rule, the CUDA one (checkpoint layout) the weight rule: both FAIL
    assert res["experts_compared"] == 2 * 4 * 3 and res["experts_after"] == res["experts_before"] > 0, res
    assert gpu_check._sync_verdict(res, tol, comparable=False)[0] is False
    assert gpu_check._sync_verdict(res, tol, comparable=True)[0] is False
