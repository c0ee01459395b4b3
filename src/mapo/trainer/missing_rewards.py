"""Trainer side of the missing-reward policy (:mod:`mapo.rewards.missing`): metrics, one warning, the policy.

Called from ``AudioGRPOTrainer._calculate_rewards`` on TRL's gathered ``[N, F]`` reward table (every process sees
the same table, so every process takes the same decision and logs the same numbers).
"""

from __future__ import annotations

import logging

import torch

from ..rewards.missing import apply_missing_policy, missing_fractions

logger = logging.getLogger(__name__)

DEFAULT_POLICY = "impute"


def handle_missing_rewards(trainer, rewards_per_func: torch.Tensor, mode: str) -> torch.Tensor:
    """Log ``rewards/<name>/nan_frac`` for every reward function, warn once per function, apply the policy."""
    names = list(trainer.reward_func_names)
    policy = getattr(trainer.args, "reward_nan_policy", DEFAULT_POLICY)
    fractions = missing_fractions(rewards_per_func, names)
    warned: set[str] = trainer.__dict__.setdefault("_missing_reward_warned", set())
    for i, name in enumerate(names):
        trainer._metrics[mode][f"rewards/{name}/nan_frac"].append(fractions[name])
        if fractions[name] > 0 and name not in warned:
            warned.add(name)
            reason = getattr(trainer.reward_funcs[i], "last_failure", None)
            logger.warning(
                "reward %r returned None/NaN for %.0f%% of the completions of this batch%s. Policy "
                "reward_nan_policy=%r (docs/rewards.md): %s. Logged every step as rewards/%s/nan_frac; this "
                "warning is shown once.",
                name,
                100 * fractions[name],
                f" (reason: {reason})" if reason else " (the function did not say why; see its own log)",
                policy,
                {
                    "impute": "a missing value takes its group's mean for that function, so it neither "
                    "penalises nor favours the completion",
                    "exclude": "completions with a missing reward are left out of their group's normalisation "
                    "and get advantage 0",
                    "error": "training stops",
                }.get(policy, policy),
                name,
            )
    num_generations = trainer.num_generations if mode == "train" else trainer.num_generations_eval
    return apply_missing_policy(rewards_per_func, names, num_generations, policy)
