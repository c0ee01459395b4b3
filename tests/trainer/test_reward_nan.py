"""Missing rewards inside the trainer: rewards/<name>/nan_frac, one warning, advantages by the documented policy."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset

from mapo.trainer import MAPOTrainer

SEEN: list[list] = []


def flaky_reward(completions, **kwargs):
    """Like a judge that fails for every second completion: None there, 1.0 / 0.0 elsewhere."""
    return [None if i % 2 else float(i % 4 == 0) for i in range(len(completions))]


flaky_reward.last_failure = "HTTP 503 from the test judge"


@pytest.fixture
def make_trainer(tiny_config, audio_rows, parity_reward):
    """Factory: a MAPOTrainer with ``reward_nan_policy=policy`` on two rewards, the recorded parity and the flaky
    judge (weights 1 and 2)."""

    def recorded_parity(completions, **kwargs):
        """parity_reward, recording the completions it scored (for the independent computation)."""
        SEEN.append(list(completions))
        return parity_reward(completions)

    def make(qwen2_audio, tmp_path, policy):
        model, processor = qwen2_audio
        args = tiny_config(
            tmp_path, eta=0.0, use_relevance_mask=False, reward_nan_policy=policy, audio_canary=False
        )
        args.reward_weights = [1.0, 2.0]
        trainer = MAPOTrainer(
            model=model,
            reward_funcs=[recorded_parity, flaky_reward],
            args=args,
            processing_class=processor,
            train_dataset=Dataset.from_list(audio_rows(2)),
        )
        model.train()
        return trainer

    return make


def test_impute_policy_in_the_trainer(
    qwen2_audio, tmp_path, caplog, make_trainer, parity_reward, audio_rows, repeat_rows
):
    trainer = make_trainer(qwen2_audio, tmp_path, "impute")
    SEEN.clear()
    with caplog.at_level(logging.WARNING, logger="mapo.trainer.missing_rewards"):
        out = trainer._generate_and_score_completions(repeat_rows(audio_rows(2), 4))
        trainer._generate_and_score_completions(repeat_rows(audio_rows(2), 4))
    assert trainer._metrics["train"]["rewards/flaky_reward/nan_frac"] == [0.5, 0.5]
    assert trainer._metrics["train"]["rewards/recorded_parity/nan_frac"] == [0.0, 0.0]
    warnings = [r for r in caplog.records if "returned None/NaN" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 503 from the test judge" in warnings[0].getMessage()
    # Independent computation of the first batch's advantages from its completions.
    texts = SEEN[-2]
    parity = torch.tensor(parity_reward(texts))
    flaky = flaky_reward(texts)  # group 1: [1, None, 0, None] -> mean 0.5; group 2: [1, None, 0, None]
    filled = torch.tensor([v if v is not None else 0.5 for v in flaky])
    total = (parity + 2.0 * filled).view(2, 4)
    expected = (total - total.mean(1, keepdim=True)) / (total.std(1, keepdim=True) + 1e-4)
    assert out["advantages"].tolist() == pytest.approx(expected.view(-1).tolist(), abs=1e-5)


def test_error_policy_stops_with_the_function_name(
    qwen2_audio, tmp_path, make_trainer, audio_rows, repeat_rows
):
    trainer = make_trainer(qwen2_audio, tmp_path, "error")
    with pytest.raises(RuntimeError, match=r"flaky_reward: 4/8"):
        trainer._generate_and_score_completions(repeat_rows(audio_rows(2), 4))


def test_an_unconfigured_judge_is_refused_at_construction(
    qwen2_audio, tmp_path, monkeypatch, tiny_config, audio_rows
):
    from mapo.rewards import ConsistencyJudge, accuracy_reward

    monkeypatch.delenv("MAPO_JUDGE_BASE_URL", raising=False)
    model, processor = qwen2_audio
    with pytest.raises(ValueError, match="'consistency_reward' needs an LLM judge but none is configured"):
        MAPOTrainer(
            model=model,
            reward_funcs=[accuracy_reward, ConsistencyJudge()],
            args=tiny_config(tmp_path),
            processing_class=processor,
            train_dataset=Dataset.from_list(audio_rows(2)),
        )
