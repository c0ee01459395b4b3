"""`mapo train --config FILE.yaml`: YAML + CLI overrides through TRL's parser, JSONL data, LoRA, two phases."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mapo.cli import main as mapo_main
from mapo.data import load_audio_qa, mixture_counts
from mapo.trainer.cli import parse


def test_yaml_and_cli_overrides_are_parsed(tmp_path, train_config):
    cfg = train_config(tmp_path, eta=0.3, target_layers=[0, 1])
    script, args, model_args = parse(
        [
            "--config",
            str(cfg),
            "--eta",
            "0.05",
            "--model_name_or_path",
            "m",
            "--output_dir",
            str(tmp_path / "o"),
        ]
    )
    assert args.eta == 0.05  # the CLI wins over the YAML
    assert args.target_layers == [0, 1] and args.loss_type == "grpo"
    assert script.trainer == "mapo" and script.rewards == ["accuracy", "format"]
    assert model_args.model_name_or_path == "m"


def test_deprecated_yaml_key_attention_layers_still_reads(tmp_path, train_config):
    """The 0.1 name of target_layers keeps working from a YAML file, with a DeprecationWarning naming the new key."""
    cfg = train_config(tmp_path, attention_layers=[0, 1])
    with pytest.warns(DeprecationWarning, match="rename the field / YAML key to target_layers"):
        _, args, _ = parse(
            ["--config", str(cfg), "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
        )
    assert args.target_layers == [0, 1] and args.attention_layers is None
    both = train_config(tmp_path, attention_layers=[0], target_layers=[1])
    with pytest.raises(ValueError, match="set only target_layers"):
        parse(["--config", str(both), "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")])


def test_jsonl_mixture_proportions(tmp_path, write_jsonl):
    a = write_jsonl(tmp_path / "d", "a", 6, 200)
    b = write_jsonl(tmp_path / "d", "b", 2, 600)
    assert mixture_counts([6, 2], [0.75, 0.25]) == [6, 2]
    assert mixture_counts([100, 100], [48.6, 51.4], total=10) == [5, 5]
    ds = load_audio_qa([str(a), str(b)], proportions=[0.5, 0.5], total=8, seed=1)
    domains = sorted(ds["domain"])
    assert domains.count("a") == 4 and domains.count("b") == 4  # b sampled with repetition
    assert all(os.path.isabs(p) for p in ds["audio"])


def test_jsonl_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"audio": "x.wav", "question": "q", "choices": ["a", "b"]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field\(s\) \['answer'\]"):
        load_audio_qa(str(bad))


@pytest.mark.slow
def test_mapo_train_lora_then_second_phase_from_merged(tmp_path, write_jsonl, save_model_dir, train_config):
    model_dir = save_model_dir(tmp_path)
    data = write_jsonl(tmp_path / "data", "tones", 2, 300)
    cfg = train_config(tmp_path, train_files=[str(data)])
    phase1 = tmp_path / "phase1"
    mapo_main(
        [
            "train",
            "--config",
            str(cfg),
            "--model_name_or_path",
            str(model_dir),
            "--output_dir",
            str(phase1),
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_alpha",
            "8",
            "--lora_target_modules",
            "q_proj",
            "k_proj",
        ]
    )
    assert (phase1 / "adapter_config.json").exists()
    merged = phase1 / "merged"
    assert (merged / "model.safetensors").exists() and (merged / "processor_config.json").exists()
    phase2 = tmp_path / "phase2"
    mapo_main(
        [
            "train",
            "--config",
            str(cfg),
            "--model_name_or_path",
            str(merged),
            "--output_dir",
            str(phase2),
            "--trainer",
            "grpo",
        ]
    )
    assert (phase2 / "model.safetensors").exists()
    # The phase-2 model started from phase 1: its merged weights differ from the random initial model.
    from safetensors.numpy import load_file

    w0 = load_file(model_dir / "model.safetensors")
    w1 = load_file(merged / "model.safetensors")
    changed = [k for k in w0 if "q_proj.weight" in k and not np.allclose(w0[k], w1[k])]
    assert changed, "LoRA training must have changed the merged q_proj weights"
