"""AudioGRPOTrainer: GRPO that really trains on the audio (TRL 1.16 drops it in every scoring forward)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from mapo.modality import ModalitySpec, completion_logps_and_entropies, resolve_modality
from mapo.trainer import AudioGRPOTrainer


@pytest.fixture
def grpo_config(tiny_grpo_settings):
    """Factory: a plain GRPOConfig (the baseline takes TRL's own config) with the tiny-model CPU settings."""

    def make(tmp_path):
        return GRPOConfig(**tiny_grpo_settings(tmp_path), loss_type="grpo")

    return make


@pytest.fixture
def baseline(rewards, grpo_config):
    """Factory: the AudioGRPOTrainer baseline on the tiny-model settings."""

    def make(model, processor, tmp_path, dataset) -> AudioGRPOTrainer:
        return AudioGRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=grpo_config(tmp_path),
            train_dataset=dataset,
            processing_class=processor,
        )

    return make


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen25_omni"])
def test_two_grpo_steps_run_and_log_rewards(family, request, tmp_path, rows_dataset, baseline):
    model, processor = request.getfixturevalue(family)
    trainer = baseline(model, processor, tmp_path, rows_dataset)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    assert all("rewards/accuracy_reward/mean" in h and np.isfinite(h["loss"]) for h in logs)
    # The audio tower takes part in the training forward, so it gets a gradient whenever the PG loss is non-zero;
    # with random rewards that may be 0, so only check that training touched nothing it should not create.
    assert set(before) == {n for n, _ in model.named_parameters()}


def test_qwen2_audio_needs_the_image_token_workaround(
    qwen2_audio, tmp_path, rows_dataset, baseline, grpo_config, rewards
):
    model, processor = qwen2_audio
    assert getattr(model.config, "image_token_id", None) is None
    with pytest.raises(AttributeError, match="image_token_id"):
        GRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=grpo_config(tmp_path),
            train_dataset=rows_dataset,
            processing_class=processor,
        )
    trainer = baseline(model, processor, tmp_path, rows_dataset)
    assert getattr(model.config, "image_token_id", None) is None  # the loan was returned
    audio_id = model.config.audio_token_index
    assert audio_id in trainer.generation_kwargs["suppress_tokens"]
    assert trainer.modality.audio_start_token_id is not None  # markers resolved from the tokenizer


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen25_omni"])
def test_audio_reaches_every_scoring_forward(
    family, request, tmp_path, rows_dataset, baseline, audio_rows, repeat_rows
):
    """Scoring the same completion with two different clips changes the log-probs; plain TRL does not see audio."""
    model, processor = request.getfixturevalue(family)
    trainer = baseline(model, processor, tmp_path, rows_dataset)
    batch = trainer._generate_and_score_completions(repeat_rows(audio_rows(1), 4))
    assert "input_features" in batch and batch["input_features"].shape[0] == 4
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    c = batch["completion_ids"].size(1)
    audio = {k: batch[k] for k in ("input_features", "feature_attention_mask")}
    other_clip = processor.feature_extractor(
        [np.random.default_rng(1).standard_normal(16000).astype(np.float32)] * 4,
        sampling_rate=16000,
        return_attention_mask=True,
        padding="max_length",
        return_tensors="pt",
    )
    other = {
        "input_features": other_clip["input_features"],
        "feature_attention_mask": other_clip["attention_mask"],
    }
    with torch.no_grad():
        with trainer.audio_visible(audio):
            lp_a, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, c)
        with trainer.audio_visible(other):
            lp_b, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, c)
        plain = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, mask, c)[0]
        # Independent computation with the audio: the model's own forward, chunked fp32 head.
        ref, _ = completion_logps_and_entropies(model, ids, mask, c, temperature=trainer.temperature, **audio)
    m = batch["completion_mask"].bool()
    assert (lp_a - lp_b)[m].abs().max() > 1e-4, "changing the audio must change the policy's log-probs"
    torch.testing.assert_close(lp_a[m], ref[m], atol=1e-5, rtol=1e-5)
    # Plain TRL scores the placeholders only: its log-probs ignore the clip entirely.
    assert (plain - lp_a)[m].abs().max() > 1e-4


def test_dataset_row_without_audio_is_a_clear_error(qwen2_audio, tmp_path, baseline, audio_rows):
    model, processor = qwen2_audio
    rows = audio_rows(2)
    rows[1]["audio"] = None
    trainer = baseline(model, processor, tmp_path, Dataset.from_list(rows))
    with pytest.raises(ValueError, match="row id=row-1.*no audio"):
        trainer.train()


def test_prompt_with_two_clips_is_a_clear_error(qwen2_audio, tmp_path, rows_dataset, baseline):
    model, processor = qwen2_audio
    trainer = baseline(model, processor, tmp_path, rows_dataset)
    clip = np.zeros(16000, dtype=np.float32)
    prompt = [
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio": clip},
                {"type": "audio", "audio": clip},
                {"type": "text", "text": "Compare."},
            ],
        }
    ]
    with pytest.raises(ValueError, match="2 audio parts"):
        trainer._tokenize_prompts([prompt])


def test_audio_inputs_are_the_spec_feature_kwargs(
    qwen2_audio, tmp_path, rows_dataset, grpo_config, rewards, audio_rows, repeat_rows
):
    """The scoring forwards carry exactly ModalitySpec.audio_feature_kwargs: a processor output the spec does not
    list is refused (it would reach generate() and silently miss every scoring forward); a hand-built generic spec
    without the list gets it from the model's forward signature."""
    model, processor = qwen2_audio
    spec = resolve_modality(model, processor)
    prompt = repeat_rows(audio_rows(1), 1)[0]["prompt"]
    narrow = dataclasses.replace(spec, audio_feature_kwargs=("input_features",))
    trainer = AudioGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=grpo_config(tmp_path),
        train_dataset=rows_dataset,
        processing_class=processor,
        modality=narrow,
    )
    with pytest.raises(ValueError, match=r"returned \['feature_attention_mask'\].*audio_feature_kwargs"):
        trainer._tokenize_prompts([prompt])
    generic = ModalitySpec.generic(spec.audio_token_id, family="hand_built")
    trainer = AudioGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=grpo_config(tmp_path),
        train_dataset=rows_dataset,
        processing_class=processor,
        modality=generic,
    )
    assert trainer.modality.audio_feature_kwargs == ("input_features", "feature_attention_mask")
    trainer._tokenize_prompts([prompt])
    assert sorted(trainer._pending_audio) == ["feature_attention_mask", "input_features"]


def test_arrow_stored_prompts_are_normalised(qwen2_audio, tmp_path, baseline, audio_rows):
    """A conversational prompt saved through Arrow gets None keys and list audio; the transform undoes both."""
    model, processor = qwen2_audio
    clip = audio_rows(1)[0]["audio"]
    prompt = [
        {"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": "Which?"}]}
    ]
    ds = Dataset.from_list([{"prompt": prompt, "answer": "low", "choices": ["low", "high"]}])
    raw = ds[0]["prompt"][0]["content"]
    assert raw[1]["audio"] is None and raw[0]["text"] is None  # Arrow's struct unification
    trainer = baseline(model, processor, tmp_path, ds)
    row = trainer.train_dataset[0]
    parts = row["prompt"][0]["content"]
    assert all(v is not None for p in parts for v in p.values())
    assert isinstance(parts[0]["audio"], np.ndarray) and parts[0]["audio"].dtype == np.float32
    ids, _, fields = trainer._tokenize_prompts([row["prompt"]])
    audio_id = model.config.audio_token_index
    assert sum(t == audio_id for t in ids[0]) == 25  # one clip → one run of 25 placeholders, not one per part
