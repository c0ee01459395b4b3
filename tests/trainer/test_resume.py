"""Checkpoints: resuming from a checkpoint gives the same next-step loss as the uninterrupted run."""

from __future__ import annotations

import os

import pytest
from datasets import Dataset

from mapo.testing import tiny_qwen2_audio
from mapo.trainer import MAPOTrainer


@pytest.fixture
def run(tiny_config, varied_rewards):
    """Factory: train a fresh tiny model 3 steps (checkpoint at step 2), optionally resuming; the loss per step."""

    def train(tmp_path, processor, dataset, resume=None):
        model = tiny_qwen2_audio(tokenizer=processor.tokenizer, seed=0)
        args = tiny_config(
            tmp_path, max_steps=3, save_strategy="steps", save_steps=2, beta=0.01, max_completion_length=8
        )
        trainer = MAPOTrainer(
            model=model,
            reward_funcs=varied_rewards,
            args=args,
            train_dataset=dataset,
            processing_class=processor,
        )
        trainer.train(resume_from_checkpoint=resume)
        return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}

    return train


@pytest.mark.slow
def test_resume_gives_the_same_next_step_loss(tmp_path, qwen2_audio, run, audio_rows):
    _, processor = qwen2_audio
    # 4 prompts = 4 steps per epoch, so step 3 lies in the first epoch in both runs (the sampler's order across an
    # epoch boundary depends on how many epochs its generator has drawn, which a resume skips).
    rows_dataset = Dataset.from_list(audio_rows(4))
    full = run(tmp_path / "a", processor, rows_dataset)
    assert set(full) == {1, 2, 3} and any(abs(v) > 0 for v in full.values())
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    assert os.path.isdir(checkpoint)
    resumed = run(tmp_path / "a", processor, rows_dataset, resume=str(checkpoint))
    # the resumed state carries the logged history of steps 1-2; step 3 is the one computed after resuming
    assert set(resumed) == {1, 2, 3}
    assert abs(resumed[3] - full[3]) <= 1e-6, (resumed, full)
