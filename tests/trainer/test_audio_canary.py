"""The audio canary: audio/influence at the first generation batch; training stops when the audio is cut off."""

from __future__ import annotations

import time

import pytest
import torch

from mapo.trainer import AudioGRPOTrainer, MAPOTrainer
from mapo.trainer.audio_canary import AudioNotReachingModelError, canary_rows


class _AudioCutOff(AudioGRPOTrainer):
    """A deliberately broken trainer: the audio features never reach the scoring forward (what TRL 1.16 does)."""

    def _current_audio(self):
        return None


@pytest.fixture
def make_trainer(rewards, tiny_config):
    """Factory: a trainer of class ``cls`` on the tiny-model settings (``overrides`` go to the config)."""

    def make(cls, model, processor, tmp_path, dataset, **overrides):
        return cls(
            model=model,
            reward_funcs=rewards,
            args=tiny_config(tmp_path, **overrides),
            train_dataset=dataset,
            processing_class=processor,
        )

    return make


def test_canary_logs_the_influence_of_the_audio(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, audio_rows, repeat_rows
):
    model, processor = qwen2_audio
    trainer = make_trainer(MAPOTrainer, model, processor, tmp_path, rows_dataset, eta=0.0)
    model.train()
    start = time.perf_counter()
    batch = trainer._generate_and_score_completions(repeat_rows(audio_rows(2), 4))
    influence = trainer._metrics["train"]["audio/influence"]
    assert len(influence) == 1 and influence[0] > 1e-4, influence
    # Independent check: score rows 0 and 4 (one per prompt group) with the real features and with silence.
    rows = torch.tensor(canary_rows(8, 4, 4))
    assert rows.tolist() == [0, 4, 1, 2]
    silence = processor.feature_extractor(
        [torch.zeros(16000).numpy()] * len(rows),
        sampling_rate=16000,
        return_attention_mask=True,
        padding="max_length",
        return_tensors="pt",
    )
    ids = torch.cat([batch["prompt_ids"][rows], batch["completion_ids"][rows]], 1)
    mask = torch.cat([batch["prompt_mask"][rows], batch["completion_mask"][rows]], 1)
    real = {k: batch[k][rows] for k in ("input_features", "feature_attention_mask")}
    silent = {
        "input_features": silence["input_features"],
        "feature_attention_mask": silence["attention_mask"],
    }
    base = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        logps = []
        for audio in (real, silent):
            out = base(input_ids=ids, attention_mask=mask, **audio)
            logits = out.logits[:, -batch["completion_ids"].size(1) - 1 : -1].float() / trainer.temperature
            lp = logits.log_softmax(-1).gather(-1, batch["completion_ids"][rows].unsqueeze(-1)).squeeze(-1)
            logps.append(lp)
    cm = batch["completion_mask"][rows].float()
    expected = ((logps[0] - logps[1]).abs() * cm).sum() / cm.sum()
    assert influence[0] == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    # once per run: a second batch adds no measurement
    trainer._generate_and_score_completions(repeat_rows(audio_rows(2), 4))
    assert len(trainer._metrics["train"]["audio/influence"]) == 1
    assert time.perf_counter() - start < 120


@pytest.mark.slow
def test_canary_stops_training_when_the_audio_is_cut_off(qwen2_audio, tmp_path, rows_dataset, make_trainer):
    model, processor = qwen2_audio
    trainer = make_trainer(_AudioCutOff, model, processor, tmp_path, rows_dataset, eta=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(AudioNotReachingModelError, match=r"audio/influence = 0 .*never reaches the decoder"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # stopped before any update


def test_canary_catches_an_audio_projector_that_outputs_nothing(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, audio_rows, repeat_rows
):
    model, processor = qwen2_audio
    with torch.no_grad():  # the audio embeddings no longer depend on the audio
        model.model.multi_modal_projector.linear.weight.zero_()
    trainer = make_trainer(AudioGRPOTrainer, model, processor, tmp_path, rows_dataset, eta=0.0)
    model.train()
    with pytest.raises(AudioNotReachingModelError):
        trainer._generate_and_score_completions(repeat_rows(audio_rows(2), 4))
    off = make_trainer(
        AudioGRPOTrainer, model, processor, tmp_path, rows_dataset, eta=0.0, audio_canary=False
    )
    off._generate_and_score_completions(repeat_rows(audio_rows(2), 4))  # switched off: no check, no metric
    assert "audio/influence" not in off._metrics["train"]
