"""Eq. 6: r = λ_acc·r_acc + λ_format·r_format + λ_cons·r_cons, as TRL ``reward_funcs`` + ``reward_weights``.

TRL computes the weighted sum itself (``GRPOConfig.reward_weights``; ``None`` rewards become NaN and are skipped
by its ``nansum``). MAPO's failure gate f̂ (eq. 4) reads the *raw* accuracy column, so :func:`build_rewards`
also returns the name under which TRL logs the accuracy reward (``rewards/accuracy_reward/mean``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from mapo.rewards.accuracy import accuracy_reward, format_reward
from mapo.rewards.judge import ENV_PREFIX, ConsistencyJudge, JudgeClient

__all__ = ["DEFAULT_REWARD_WEIGHTS", "RewardSet", "build_rewards", "reward_name"]

logger = logging.getLogger(__name__)

#: λ of eq. 6 (paper §4): accuracy 2, format 1, consistency 1.
DEFAULT_REWARD_WEIGHTS: dict[str, float] = {"accuracy": 2.0, "format": 1.0, "consistency": 1.0}

_MISSING_JUDGE = ("raise", "drop")


class RewardSet(NamedTuple):
    """What :func:`build_rewards` returns; unpacks as ``funcs, weights, accuracy_name``."""

    #: TRL ``reward_funcs``.
    funcs: list[Callable[..., list[float | None]]]
    #: TRL ``reward_weights`` (same order).
    weights: list[float]
    #: ``__name__`` of the accuracy reward (MAPO's failure gate), ``None`` if it is not among ``funcs``.
    accuracy_name: str | None


def reward_name(func: Callable[..., Any]) -> str:
    """The name TRL logs for a reward function (``functools.partial`` unwrapped, like TRL's own helper)."""
    while hasattr(func, "func") and hasattr(func, "args"):  # functools.partial
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def build_rewards(
    names: Sequence[str | Callable[..., Any]] = ("accuracy", "format", "consistency"),
    weights: Mapping[str, float] | Sequence[float] | None = None,
    judge: ConsistencyJudge | JudgeClient | None = None,
    *,
    missing_judge: str = "raise",
    env_prefix: str = ENV_PREFIX,
) -> RewardSet:
    """The reward functions and weights of eq. 6 for TRL, plus the accuracy reward's name.

    Args:
        names: ``"accuracy"``, ``"format"``, ``"consistency"``, or any reward callable (its weight defaults to 1).
        weights: ``None`` (paper: 2, 1, 1), a mapping from the short names (or a callable's ``__name__``) to λ,
            or one λ per entry of ``names``.
        judge: the consistency judge (a :class:`ConsistencyJudge`, or a :class:`JudgeClient` wrapped in one).
            ``None``: built from the ``MAPO_JUDGE_*`` environment variables if ``MAPO_JUDGE_BASE_URL`` is set.
        missing_judge: what to do when ``"consistency"`` is requested but no judge is configured: ``"raise"``
            (default: a ``ValueError`` saying how to configure it) or ``"drop"`` (leave r_cons out with a
            logged warning; the remaining weights are unchanged). Leaving ``"consistency"`` out of ``names`` is
            the silent, explicit way to train without it.

    Example:
        >>> funcs, weights, acc_name = build_rewards(("accuracy", "format"))
        >>> [reward_name(f) for f in funcs], weights, acc_name
        (['accuracy_reward', 'format_reward'], [2.0, 1.0], 'accuracy_reward')
    """
    if missing_judge not in _MISSING_JUDGE:
        raise ValueError(f"missing_judge must be one of {_MISSING_JUDGE}, got {missing_judge!r}")
    if isinstance(names, str):
        raise TypeError(
            f"names must be a sequence of reward names, got the string {names!r}; wrap it in a tuple"
        )
    if not names:
        raise ValueError("names must list at least one reward")
    if weights is not None and not isinstance(weights, Mapping) and len(weights) != len(names):
        raise ValueError(f"weights has {len(weights)} entries for {len(names)} rewards {list(names)}")
    known = {"accuracy": accuracy_reward, "format": format_reward}
    funcs: list[Callable[..., Any]] = []
    out_weights: list[float] = []
    keys: list[str] = []
    for pos, entry in enumerate(names):
        if callable(entry):
            func, key = entry, reward_name(entry)
        elif entry in known:
            func, key = known[entry], entry
        elif entry == "consistency":
            key = entry
            if isinstance(judge, JudgeClient):
                func = ConsistencyJudge(judge, env_prefix=env_prefix)
            elif isinstance(judge, ConsistencyJudge):
                func = judge
            elif judge is not None:
                raise TypeError(
                    f"judge must be a ConsistencyJudge or JudgeClient, got {type(judge).__name__}"
                )
            elif JudgeClient.env_configured(env_prefix):
                func = ConsistencyJudge(JudgeClient.from_env(env_prefix), env_prefix=env_prefix)
            elif missing_judge == "drop":
                logger.warning(
                    "build_rewards: no consistency judge configured (pass judge= or set %sBASE_URL); training "
                    "WITHOUT r_cons (λ_cons dropped) because missing_judge='drop'",
                    env_prefix,
                )
                continue
            else:
                raise ValueError(
                    f"'consistency' was requested but no judge is configured: pass judge=JudgeClient(base_url=..., "
                    f"model=...), set {env_prefix}BASE_URL (and {env_prefix}MODEL), leave 'consistency' out of "
                    "names, or pass missing_judge='drop'"
                )
        else:
            raise ValueError(
                f"unknown reward {entry!r}; use 'accuracy', 'format', 'consistency' or pass a reward callable"
            )
        if weights is None:
            weight = DEFAULT_REWARD_WEIGHTS.get(key, 1.0)
        elif isinstance(weights, Mapping):
            weight = weights.get(key, weights.get(reward_name(func), DEFAULT_REWARD_WEIGHTS.get(key, 1.0)))
        else:
            weight = weights[pos]
        funcs.append(func)
        out_weights.append(float(weight))
        keys.extend([key, reward_name(func)])
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(keys) - set(DEFAULT_REWARD_WEIGHTS))
        if unknown:
            raise ValueError(f"weights has entries {unknown} that name none of the rewards {list(names)}")
    # A functools.partial of accuracy_reward (e.g. answer_match="contains") keeps the name, so match by name.
    accuracy_name = next(
        (reward_name(f) for f in funcs if reward_name(f) == reward_name(accuracy_reward)), None
    )
    return RewardSet(funcs, out_weights, accuracy_name)
