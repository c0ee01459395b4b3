"""Every shipped ``configs/*.yaml`` parses through ``mapo train``'s parser (TRL's TrlParser refuses unknown keys)."""

from __future__ import annotations

import pathlib

import pytest

from mapo.trainer.cli import parse

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path):
    # bf16 needs a GPU otherwise; the configs log to tensorboard, an optional extra (mapo-rl[tensorboard]) that the
    # test environment does not install, and whose absence MAPOConfig refuses (tested in test_cli_robustness.py).
    script, args, model_args = parse(["--config", str(path), "--use_cpu", "true", "--report_to", "none"])
    assert args.warmup_steps == 0.05 and args.learning_rate == 1e-6 and args.num_generations == 8
    assert model_args.model_name_or_path and script.train_files
    if path.name.endswith("_lora.yaml") and "qwen3" in path.name:
        assert model_args.lora_target_parameters == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
        assert (script.lora_expert_r, script.lora_expert_alpha, model_args.lora_dropout) == (16, 64, 0.0)
