"""Missing rewards (``None`` / NaN): counted per function and handled by one documented policy.

A reward function returns ``None`` when it cannot score a completion (the consistency judge unreachable, a reply
that is neither YES nor NO); TRL 1.16 turns it into NaN. TRL then sums the weighted rewards with ``nansum``, so a
missing value counts as **0** in that completion's total: a hidden penalty against the rest of its group (the other
completions got their r_cons, this one did not). Only a completion for which *every* function is missing is left
out of the group's mean/std and gets advantage 0.

:func:`apply_missing_policy` replaces that implicit 0, before TRL combines the rewards (eq. 6):

* ``"impute"`` (default): a missing value of function k is replaced by the mean of function k over the scored
  completions of the same group (the G completions of one prompt), so it moves neither the group's baseline nor
  that completion's advantage for function k; the completion keeps the signal of its other rewards. A group in
  which function k is missing for every completion gets 0 for k on all of them, a constant that cancels in the
  group normalisation. Completions missing *every* reward stay NaN (TRL's own rule: excluded, advantage 0).
* ``"exclude"``: a completion with any missing reward is left out of its group's normalisation and gets
  advantage 0 (TRL's rule for all-missing completions, extended to partly missing ones).
* ``"error"``: a ``RuntimeError`` naming the function and the count.

Pure torch; the trainer hook is ``AudioGRPOTrainer._calculate_rewards``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["MISSING_REWARD_POLICIES", "apply_missing_policy", "missing_fractions"]

MISSING_REWARD_POLICIES: tuple[str, ...] = ("impute", "exclude", "error")


def missing_fractions(rewards_per_func: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Share of NaN entries per reward function. ``rewards_per_func``: ``[N, F]``, columns in ``names`` order."""
    if rewards_per_func.dim() != 2 or rewards_per_func.size(1) != len(names):
        raise ValueError(f"rewards_per_func must be [N, {len(names)}], got {tuple(rewards_per_func.shape)}")
    frac = torch.isnan(rewards_per_func).float().mean(0) if rewards_per_func.size(0) else None
    return {name: (float(frac[i]) if frac is not None else 0.0) for i, name in enumerate(names)}


def apply_missing_policy(
    rewards_per_func: torch.Tensor, names: Sequence[str], num_generations: int, policy: str = "impute"
) -> torch.Tensor:
    """The reward table TRL should combine, with missing (NaN) entries handled by ``policy`` (module docstring).

    Args:
        rewards_per_func: ``[N, F]`` rewards of all N completions (N = groups × ``num_generations``, each group's
            G completions contiguous, as TRL lays them out), NaN where a function returned ``None``.
        names: the F reward function names (for the error message).
        num_generations: G, the group size.
        policy: one of :data:`MISSING_REWARD_POLICIES`.

    Returns:
        A new ``[N, F]`` tensor (the input is not modified).
    """
    if policy not in MISSING_REWARD_POLICIES:
        raise ValueError(f"missing reward policy must be one of {MISSING_REWARD_POLICIES}, got {policy!r}")
    nan = torch.isnan(rewards_per_func)
    if not nan.any():
        return rewards_per_func.clone()
    if policy == "error":
        counts = nan.sum(0).tolist()
        detail = ", ".join(f"{n}: {c}/{nan.size(0)}" for n, c in zip(names, counts) if c)
        raise RuntimeError(
            f"reward function(s) returned None/NaN ({detail}) and reward_nan_policy='error'. Fix the reward (for "
            "the consistency judge: is the server at judge_base_url up?), or set reward_nan_policy to 'impute' or "
            "'exclude' (docs/rewards.md)."
        )
    out = rewards_per_func.clone()
    all_missing = nan.all(1)
    if policy == "exclude":
        out[nan.any(1)] = torch.nan
        return out
    n, f = out.shape
    if n % num_generations:
        raise ValueError(f"{n} completions do not form groups of num_generations={num_generations}")
    grouped = out.view(-1, num_generations, f)
    group_mean = torch.nan_to_num(torch.nanmean(grouped, dim=1, keepdim=True), nan=0.0)
    filled = torch.where(torch.isnan(grouped), group_mean.expand_as(grouped), grouped).view(n, f)
    filled[all_missing] = torch.nan  # unscorable: TRL excludes it and gives it advantage 0
    return filled
