"""Offline consistency reward of the tone-melody task: r_cons of the paper's eq. 6 without an LLM judge.

The paper's judge (``mapo.rewards.ConsistencyJudge``, appendix B) answers NO when the reasoning is incomplete or
cut off, or when its conclusion disagrees with the final answer. On this task both are decidable by rule: the
chain is complete when ``<think>…</think>`` is closed and names one note after each of the ordinals ``first`` …
``<K-th>`` in order, and its conclusion is the last note it names (the question asks for the last note). So the
reward plays the judge's role deterministically, with the same TRL signature: ``completions`` plus dataset
columns as keyword arguments, one float per completion, no ground truth used (consistency is not correctness).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mapo.rewards import completion_text

from .task import NOTE_NAMES, ORDINALS

__all__ = ["chain_is_consistent", "synthetic_consistency_reward"]

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")


def chain_is_consistent(text: str, n_notes: int = 6) -> bool:
    """True iff ``text`` has a complete chain of ``n_notes`` steps and an answer equal to its last note.

    Complete = a closed ``<think>`` block whose words are exactly ``first N1 second N2 … <K-th> NK`` (each N a
    note name); the answer = the stripped text of the first ``<answer>…</answer>``.
    """
    think, answer = _THINK.search(text), _ANSWER.search(text)
    if think is None or answer is None:
        return False  # cut off or no conclusion: the judge's "incomplete" case
    words = _WORD.findall(think.group(1))
    expected_len = 2 * n_notes
    if len(words) != expected_len:
        return False
    for k in range(n_notes):
        if words[2 * k] != ORDINALS[k] or words[2 * k + 1] not in NOTE_NAMES:
            return False
    return answer.group(1).strip() == words[-1]


def synthetic_consistency_reward(
    completions: Sequence[Any], *, notes: Sequence[Sequence[str]] | None = None, **kwargs: Any
) -> list[float]:
    """r_cons per completion: 1.0 if :func:`chain_is_consistent`, else 0.0 (TRL reward-function signature).

    ``notes`` (the task rows' ground-truth notes, passed by TRL as a dataset column) only sets the chain length K
    per completion; without it K = 6, the task default. Other columns are ignored.
    """
    out: list[float] = []
    for i, completion in enumerate(completions):
        k = len(notes[i]) if notes is not None else 6
        out.append(1.0 if chain_is_consistent(completion_text(completion), k) else 0.0)
    return out
