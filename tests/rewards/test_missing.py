"""Missing rewards (None/NaN): the policy replaces TRL's implicit 0 and is checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from mapo.rewards.missing import apply_missing_policy, missing_fractions

NAN = float("nan")
NAMES = ["accuracy_reward", "consistency_reward"]


def _trl_advantages(table: torch.Tensor, weights: list[float], g: int) -> list[float]:
    """TRL 1.16's sum_then_normalize on a reward table: nansum, all-NaN rows excluded, group mean/std, NaN -> 0."""
    unscorable = torch.isnan(table).all(1)
    rewards = (table * torch.tensor(weights)).nansum(1)
    rewards[unscorable] = NAN
    grouped = rewards.view(-1, g)
    mean = torch.nanmean(grouped, 1, keepdim=True)
    n = (~torch.isnan(grouped)).sum(1, keepdim=True)
    std = ((grouped - mean).pow(2).nansum(1, keepdim=True) / (n - 1)).sqrt()
    return torch.nan_to_num((grouped - mean) / (std + 1e-4), nan=0.0).view(-1).tolist()


def test_impute_uses_the_group_mean_of_that_function():
    # one group of 4: the judge failed for completions 1 and 3
    table = torch.tensor([[1.0, 1.0], [1.0, NAN], [0.0, 0.0], [0.0, NAN]])
    out = apply_missing_policy(table, NAMES, num_generations=4, policy="impute")
    assert out[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]  # untouched
    assert out[:, 1].tolist() == [1.0, 0.5, 0.0, 0.5]  # mean of the scored 1.0 and 0.0
    assert torch.isnan(table[1, 1])  # input not modified
    # TRL's implicit 0 would rank completion 1 (correct, judge failed) below completion 0 by λ_cons = 1
    implicit = _trl_advantages(table, [2.0, 1.0], 4)
    imputed = _trl_advantages(out, [2.0, 1.0], 4)
    assert implicit[1] < implicit[0]
    # totals 3, 2.5, 0, 0.5: mean 1.5, sample std sqrt(((1.5)^2+1^2+1.5^2+1^2)/3)
    std = math.sqrt((1.5**2 + 1.0 + 1.5**2 + 1.0) / 3)
    assert imputed == pytest.approx(
        [1.5 / (std + 1e-4), 1.0 / (std + 1e-4), -1.5 / (std + 1e-4), -1.0 / (std + 1e-4)]
    )


def test_impute_whole_group_missing_is_a_constant_and_all_missing_rows_stay_unscorable():
    table = torch.tensor([[1.0, NAN], [0.0, NAN], [NAN, NAN], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    out = apply_missing_policy(table, NAMES, num_generations=3, policy="impute")
    assert out[:2, 1].tolist() == [0.0, 0.0]  # group 1 has no r_cons at all: 0 for all, cancels in the group
    assert torch.isnan(out[2]).all()  # every reward missing: TRL excludes it and gives it advantage 0
    assert out[3:].tolist() == table[3:].tolist()


def test_exclude_and_error_policies():
    table = torch.tensor([[1.0, 1.0], [1.0, NAN], [0.0, 0.0], [0.0, 1.0]])
    out = apply_missing_policy(table, NAMES, num_generations=4, policy="exclude")
    assert torch.isnan(out[1]).all() and not torch.isnan(out[[0, 2, 3]]).any()
    adv = _trl_advantages(out, [2.0, 1.0], 4)
    assert adv[1] == 0.0  # excluded completion: no learning signal
    totals = [3.0, 0.0, 1.0]  # the three scored completions define the baseline alone
    mean = sum(totals) / 3
    std = math.sqrt(sum((t - mean) ** 2 for t in totals) / 2)
    assert [adv[0], adv[2], adv[3]] == pytest.approx([(t - mean) / (std + 1e-4) for t in totals])
    with pytest.raises(RuntimeError, match=r"consistency_reward: 1/4.*reward_nan_policy='error'"):
        apply_missing_policy(table, NAMES, num_generations=4, policy="error")
    with pytest.raises(ValueError, match="must be one of"):
        apply_missing_policy(table, NAMES, num_generations=4, policy="zero")


def test_missing_fractions_per_function():
    table = torch.tensor([[1.0, NAN], [NAN, NAN], [0.0, 0.0], [0.0, NAN]])
    assert missing_fractions(table, NAMES) == {"accuracy_reward": 0.25, "consistency_reward": 0.75}
