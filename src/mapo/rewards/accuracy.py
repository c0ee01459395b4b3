"""Rule-based rewards r_acc and r_format of the paper's eq. 6 (§4 "Reward Formulation").

Both follow TRL's reward-function signature: they receive ``completions`` (strings or conversational message
lists) and the dataset columns as keyword arguments (``prompts``, ``completion_ids``, ``trainer_state``... land in
``**kwargs``) and return one float per completion. The exact rules are in ``docs/rewards.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mapo.rewards.extraction import (
    answer_letter,
    completion_text,
    extract_answer,
    match_option,
    normalize_answer,
    resolve_gold,
    text_key,
)

__all__ = ["accuracy_reward", "format_reward"]


def _per_completion(name: str, value: Any, n: int, *, nested: bool) -> list[Any]:
    """Broadcast a dataset column to one entry per completion (TRL passes lists; direct callers may not)."""
    if value is None:
        return [None] * n
    if isinstance(value, str):
        if nested:
            raise TypeError(
                f"{name}: expected a list of option texts (or one list per completion), got a string"
            )
        return [value] * n
    value = list(value)
    if nested and all(isinstance(v, str) for v in value) and (value or n != 0):
        # A flat list of strings is one option list shared by every completion.
        return [value] * n
    if len(value) != n:
        raise ValueError(
            f"{name}: got {len(value)} entries for {n} completions; pass one entry per completion (TRL repeats "
            "dataset columns for each generation), or a single value shared by all"
        )
    return value


def _free_text_match(pred: str, gold: str, mode: str) -> bool:
    """Match without an option list: equal text keys, or the same letter when both are letters."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    pk, gk = text_key(p), text_key(g)
    if pk and pk == gk:
        return True
    lp, lg = answer_letter(p), answer_letter(g)
    if lp is not None and lg is not None:
        return lp == lg
    return mode == "contains" and bool(gk) and f" {gk} " in f" {pk} "


def accuracy_reward(
    completions: Sequence[Any],
    answer: Sequence[str] | str,
    choices: Sequence[Sequence[str] | None] | Sequence[str] | None = None,
    *,
    answer_match: str = "exact",
    **kwargs: Any,
) -> list[float]:
    """r_acc (eq. 6): 1.0 if the completion's final answer designates the correct option, else 0.0.

    Args:
        completions: ``B`` completions, strings or ``[{"role": "assistant", "content": ...}]`` lists.
        answer: dataset column, the correct option's text per completion (a letter is accepted when choices
            exist). A single string is shared by all completions.
        choices: dataset column, the option texts per completion (``None`` or ``[]``: free-text comparison with
            ``answer``). A flat list of strings is shared by all completions.
        answer_match: ``"exact"`` (default) or ``"contains"`` (also accept an answer that mentions exactly one
            option text as a whole-word phrase). Bind it with ``functools.partial``; TRL keeps the name.

    Match rules (``docs/rewards.md``): the answer is the single ``<answer>…</answer>`` after ``</think>``, else the
    text after ``</think>`` (the whole completion if there are no think tags); it is cleaned (whitespace,
    markdown, quotes, trailing ``.,;:!?``, a leading "Answer:"/"The answer is" label) and must then *equal*,
    case- and punctuation-insensitively, the correct option's text, or be its letter ("B", "(B)", "B.",
    "Option B"), or a marked letter plus that option's text ("B. Piano", "(B) Piano"). Scored 0.0: no answer
    (unclosed ``<think>``, empty answer), two or more answer tags, a hedge ("A or B"), a letter beyond the
    options, a letter whose text names another option, text equal to several options, extra words ("It is a
    piano") unless ``answer_match="contains"``. There is no prefix matching ("dog" does not match "dogs").

    Raises:
        ValueError: ``answer`` does not designate exactly one of ``choices`` (a dataset bug), or column lengths
            differ from the number of completions.
    """
    n = len(completions)
    answers = _per_completion("answer", answer, n, nested=False)
    options = _per_completion("choices", choices, n, nested=True)
    rewards: list[float] = []
    for i, (completion, gold, opts) in enumerate(zip(completions, answers, options)):
        if gold is None:
            raise ValueError(f"answer[{i}] is None; every row needs the correct option's text in 'answer'")
        extraction = extract_answer(completion_text(completion))
        if extraction.answer is None:
            rewards.append(0.0)
            continue
        if opts:
            gold_index = resolve_gold(str(gold), opts)
            match = match_option(extraction.answer, opts, mode=answer_match)
            rewards.append(1.0 if match.index is not None and match.index == gold_index else 0.0)
        else:
            rewards.append(1.0 if _free_text_match(extraction.answer, str(gold), answer_match) else 0.0)
    return rewards


_TEMPLATE = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
_ANSWER_ONLY = re.compile(r"^<answer>(.*?)</answer>$", re.IGNORECASE | re.DOTALL)


def format_reward(
    completions: Sequence[Any],
    *,
    think_in_prompt: bool = False,
    require_answer_tag: bool = True,
    **kwargs: Any,
) -> list[float]:
    """r_format (eq. 6): 1.0 if the completion follows the thinking template exactly once, else 0.0.

    The template is ``<think>REASONING</think><answer>ANSWER</answer>``: optional whitespace around and between
    the blocks, nothing else outside them, REASONING and ANSWER not blank, and each of the four tags exactly once
    in the whole completion (so no answer tag inside the reasoning, no second think block).

    Args:
        think_in_prompt: the chat template already opened ``<think>`` in the prompt (Qwen3 thinking models); the
            completion must then contain no ``<think>`` and starts with the reasoning.
        require_answer_tag: if False, a non-blank plain-text tail after ``</think>`` with no answer tags (the
            native output of Qwen3-Omni-Thinking, e.g. ``…</think>Factory machinery``) is accepted too.
    """
    rewards: list[float] = []
    for completion in completions:
        text = completion_text(completion)
        low = text.lower()
        n_open, n_close = low.count("<think>"), low.count("</think>")
        n_aopen, n_aclose = low.count("<answer>"), low.count("</answer>")
        ok = n_open == (0 if think_in_prompt else 1) and n_close == 1
        if ok and not think_in_prompt:
            ok = low.lstrip().startswith("<think>")
        m = _TEMPLATE.match(text) if ok else None
        if m is None or not m.group(1).strip():
            rewards.append(0.0)
            continue
        tail = m.group(2)
        tagged = _ANSWER_ONLY.match(tail)
        if tagged is not None:
            ok = n_aopen == 1 and n_aclose == 1 and bool(tagged.group(1).strip())
        else:
            ok = not require_answer_tag and n_aopen == 0 and n_aclose == 0 and bool(tail.strip())
        rewards.append(1.0 if ok else 0.0)
    return rewards
