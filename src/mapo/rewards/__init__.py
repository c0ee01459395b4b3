"""Reward functions of the paper's eq. 6 with TRL's reward-function signature.

* :func:`accuracy_reward`: r_acc, strict multiple-choice matching (1.0/0.0).
* :func:`format_reward`: r_format, the ``<think>…</think><answer>…</answer>`` template (1.0/0.0).
* :class:`ConsistencyJudge` / :data:`consistency_reward`: r_cons, an LLM judge over the OpenAI-compatible API
  with the appendix-B prompt (1.0/0.0, ``None`` when the judge fails).
* :func:`build_rewards`: the three with the paper's weights λ = (2, 1, 1) and the accuracy reward's name for
  MAPO's failure gate.

The exact matching rules and failure policies are in ``docs/rewards.md``.
"""

from mapo.rewards.accuracy import accuracy_reward, format_reward
from mapo.rewards.combine import DEFAULT_REWARD_WEIGHTS, RewardSet, build_rewards, reward_name
from mapo.rewards.extraction import (
    completion_text,
    extract_answer,
    extract_think,
    match_option,
    resolve_gold,
)
from mapo.rewards.judge import (
    CONSISTENCY_PROMPT,
    DEFAULT_JUDGE_MODEL,
    ENV_PREFIX,
    ConsistencyJudge,
    JudgeClient,
    JudgeReply,
    consistency_reward,
    parse_yes_no,
)

__all__ = [
    "CONSISTENCY_PROMPT",
    "DEFAULT_JUDGE_MODEL",
    "DEFAULT_REWARD_WEIGHTS",
    "ENV_PREFIX",
    "ConsistencyJudge",
    "JudgeClient",
    "JudgeReply",
    "RewardSet",
    "accuracy_reward",
    "build_rewards",
    "completion_text",
    "consistency_reward",
    "extract_answer",
    "extract_think",
    "format_reward",
    "match_option",
    "parse_yes_no",
    "resolve_gold",
    "reward_name",
]
