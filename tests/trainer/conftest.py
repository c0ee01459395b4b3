"""Shared fixtures for the trainer tests: tiny Qwen2-Audio / Qwen2.5-Omni thinker + offline processors + data.

Tests take everything here as fixtures (never ``from .conftest import``). The helpers are plain functions below;
each has a session-scoped fixture of the same name that returns it (a factory, or a list of reward functions), so
module-scoped fixtures can use them too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from datasets import Dataset

from mapo.rewards import accuracy_reward, format_reward
from mapo.testing import (
    sine_clip,
    tiny_omni_processor,
    tiny_qwen2_audio,
    tiny_qwen2_audio_processor,
    tiny_qwen25_omni_thinker,
)
from mapo.trainer import MAPOConfig

REWARDS = [accuracy_reward, format_reward]


def audio_rows(n: int = 2, seconds: float = 1.0) -> list[dict]:
    """Rows in the training format (audio as a float array): tone questions with two options."""
    return [
        {
            "audio": sine_clip(220.0 * (1 + i), seconds, seed=i).tolist(),
            "question": f"Is tone {i} low or high?",
            "choices": ["low", "high"],
            "answer": "low" if i % 2 == 0 else "high",
            "id": f"row-{i}",
        }
        for i in range(n)
    ]


def tiny_grpo_settings(tmp_path) -> dict:
    """GRPOConfig fields for the tiny models on CPU: fp32, G=4, one prompt group per step, short completions, no
    checkpoints."""
    return dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=10,
        max_steps=2,
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        save_strategy="no",
        learning_rate=1e-3,
        beta=0.0,
        seed=0,
    )


def tiny_config(tmp_path, **overrides) -> MAPOConfig:
    """:func:`tiny_grpo_settings` as a MAPOConfig with the lexicon POS tagger (no NLTK data needed)."""
    base = dict(tiny_grpo_settings(tmp_path), pos_tagger="lexicon", dataloader_num_workers=0)
    base.update(overrides)
    return MAPOConfig(**base)


@pytest.fixture
def qwen2_audio():
    processor = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer)
    return model, processor


@pytest.fixture
def qwen25_omni():
    return tiny_qwen25_omni_thinker().model, tiny_omni_processor()


@pytest.fixture
def rows_dataset():
    return Dataset.from_list(audio_rows(2))


def repeat_rows(rows: list[dict], g: int) -> list[dict]:
    """What TRL's RepeatSampler hands to ``_generate_and_score_completions``: each row G times, transformed."""
    from mapo.data import AudioPromptTransform

    transform = AudioPromptTransform(sampling_rate=16000)
    out = []
    for row in rows:
        batch = transform({k: [v] for k, v in row.items()})
        one = {k: v[0] for k, v in batch.items()}
        one["prompt"][-1]["content"][0]["audio"] = np.asarray(row["audio"], dtype=np.float32)
        out.extend([dict(one) for _ in range(g)])
    return out


def sharpen(model, head_scale: float = 30.0, projector_scale: float = 10.0):
    """Random tiny models predict near-uniform distributions (entropy ≈ ln V), so Δh ≈ 0. Scaling the LM head and
    the audio projector makes the distributions peaked and audio-dependent (|Δh| ~ 0.2-0.5 nats), so ω̃ and ν̃
    are far from uniform and the tests of eq. 1-4 inside the trainer can fail."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(head_scale)
        model.model.multi_modal_projector.linear.weight.mul_(projector_scale)
    return model


def parity_reward(completions, **kwargs):
    """A deterministic reward that varies across a group (random tiny models never answer correctly), so the
    advantages and hence the policy-gradient loss are non-zero."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(len(t) % 3) for t in texts]


VARIED_REWARDS = [accuracy_reward, format_reward, parity_reward]


# ----------------------------------------------------------------------------------------------------------------
# `mapo train` inputs on disk
# ----------------------------------------------------------------------------------------------------------------


def write_jsonl(folder, name, n, freq0):
    """``n`` tone rows as ``folder/name.jsonl`` with their clips (8 kHz, resampled on load) under ``folder/clips``."""
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


def save_model_dir(tmp_path):
    """The tiny Qwen2-Audio and its processor saved as ``tmp_path/model`` (a checkpoint for ``mapo train``)."""
    processor = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def train_config(tmp_path, **extra):
    """A ``mapo train`` YAML config for the tiny model on CPU (``extra`` overrides fields) as ``tmp_path/config.yaml``."""
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


# ----------------------------------------------------------------------------------------------------------------
# The helpers as fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", name="rewards")
def _rewards():
    """The accuracy and format rewards."""
    return REWARDS


@pytest.fixture(scope="session", name="varied_rewards")
def _varied_rewards():
    """:data:`REWARDS` and :func:`parity_reward` (non-zero advantages on random tiny models)."""
    return VARIED_REWARDS


@pytest.fixture(scope="session", name="parity_reward")
def _parity_reward():
    return parity_reward


@pytest.fixture(scope="session", name="audio_rows")
def _audio_rows():
    return audio_rows


@pytest.fixture(scope="session", name="repeat_rows")
def _repeat_rows():
    return repeat_rows


@pytest.fixture(scope="session", name="tiny_grpo_settings")
def _tiny_grpo_settings():
    return tiny_grpo_settings


@pytest.fixture(scope="session", name="tiny_config")
def _tiny_config():
    return tiny_config


@pytest.fixture(scope="session", name="sharpen")
def _sharpen():
    return sharpen


@pytest.fixture(scope="session", name="write_jsonl")
def _write_jsonl():
    return write_jsonl


@pytest.fixture(scope="session", name="save_model_dir")
def _save_model_dir():
    return save_model_dir


@pytest.fixture(scope="session", name="train_config")
def _train_config():
    return train_config
