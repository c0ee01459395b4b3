"""`mapo train --config FILE.yaml`: YAML + CLI overrides through TRL's parser, JSONL data, LoRA, two phases."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import yaml

from mapo.cli import main as mapo_main
from mapo.data import load_audio_qa, mixture_counts
from mapo.testing import sine_clip, tiny_qwen2_audio, tiny_qwen2_audio_processor
from mapo.trainer.cli import parse


def _write_jsonl(folder, name, n, freq0):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clips").mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        sf.write(
            folder / "clips" / f"{name}{i}.wav", sine_clip(freq0 + 50 * i, 1.0, sr=8000), 8000
        )  # resampled
        lines.append(
            {
                "audio": f"clips/{name}{i}.wav",
                "question": "Low or high?",
                "choices": ["low", "high"],
                "answer": "low",
                "domain": name,
                "id": f"{name}-{i}",
            }
        )
    path = folder / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _model_dir(tmp_path):
    processor = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _config(tmp_path, **extra):
    cfg = {
        "trainer": "mapo",
        "rewards": ["accuracy", "format"],
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 8,
        "bf16": False,
        "use_cpu": True,
        "gradient_checkpointing": False,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
        "pos_tagger": "lexicon",
        "beta": 0.0,
        "learning_rate": 1e-3,
    }
    cfg.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_yaml_and_cli_overrides_are_parsed(tmp_path):
    cfg = _config(tmp_path, eta=0.3, target_layers=[0, 1])
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


def test_deprecated_yaml_key_attention_layers_still_reads(tmp_path):
    """The 0.1 name of target_layers keeps working from a YAML file, with a DeprecationWarning naming the new key."""
    cfg = _config(tmp_path, attention_layers=[0, 1])
    with pytest.warns(DeprecationWarning, match="rename the field / YAML key to target_layers"):
        _, args, _ = parse(
            ["--config", str(cfg), "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
        )
    assert args.target_layers == [0, 1] and args.attention_layers is None
    both = _config(tmp_path, attention_layers=[0], target_layers=[1])
    with pytest.raises(ValueError, match="set only target_layers"):
        parse(["--config", str(both), "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")])


def test_jsonl_mixture_proportions(tmp_path):
    a = _write_jsonl(tmp_path / "d", "a", 6, 200)
    b = _write_jsonl(tmp_path / "d", "b", 2, 600)
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
def test_mapo_train_lora_then_second_phase_from_merged(tmp_path):
    model_dir = _model_dir(tmp_path)
    data = _write_jsonl(tmp_path / "data", "tones", 2, 300)
    cfg = _config(tmp_path, train_files=[str(data)])
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
