"""Scoring of predictions and the per-benchmark summary in the paper's groupings (Tables 2 and 3).

Rules (``docs/eval.md`` has the long version):

* **Multiple choice** (MMAU, MMAR, MMSU, MMAU-Pro closed): correct iff the accuracy reward r_acc of training
  (:func:`mapo.rewards.accuracy_reward`) gives 1.0: the final answer after ``</think>`` / inside ``<answer>``
  must name the correct option (its text or its letter). Identical options are one answer (16 real MMAU
  test-mini items list the correct option twice): naming either copy is correct. :func:`match_choice` is the only
  function that talks to the reward module.
* **Instruction following** (MMAU-Pro): :func:`mapo.eval.instruction_following.check_instruction` on the final
  answer; unknown ``task_identifier`` s are unscored, never guessed. No final answer (e.g. an unclosed
  ``<think>``) scores 0: negative constraints ("no commas") must not pass on an empty string.
* **Open** (MMAU-Pro): judge OVERALL grade / 5 (:mod:`mapo.eval.open_judge`); unscored without a judge. An item
  without a final answer gets the lowest grade (1 → 0.2) without asking the judge.
* **Overall** = micro-average over scored items: (Σ scores) / (number of scored items). Unscored items (invalid
  gold answer, no judge, judge failure, uncheckable instruction) are counted and listed by reason, never scored 0.
* ``scorer="official"``: each benchmark's published rule instead (:mod:`mapo.eval.official`).
* **Groups**: the columns of the paper's tables; items with group ``None`` (MMAR's mixed modalities) count in the
  overall score only.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from mapo.eval.instruction_following import UncheckableInstruction, check_instruction
from mapo.eval.items import Prediction
from mapo.eval.loaders import BENCHMARKS
from mapo.eval.open_judge import grade_open

__all__ = [
    "SCORERS",
    "extract_final_answer",
    "gold_options",
    "match_choice",
    "score_predictions",
    "summarize",
]

#: ``strict`` (default: the accuracy reward's rules) or ``official`` (each benchmark's published rule).
SCORERS: tuple[str, ...] = ("strict", "official")

logger = logging.getLogger(__name__)

#: Score of an open item without a final answer: the lowest judge grade (1) / 5.
NO_ANSWER_OPEN_SCORE = 0.2


# ---------------------------------------------------------------------------------------------------------------
# The adapter to the accuracy reward (the one place to change if its API changes)
# ---------------------------------------------------------------------------------------------------------------


def extract_final_answer(prediction: str) -> str | None:
    """The final answer of a completion, by the accuracy reward's extraction rules (``None`` if there is none)."""
    from mapo.rewards import completion_text, extract_answer

    return extract_answer(completion_text(prediction)).answer


def gold_options(answer: str, choices: Sequence[str]) -> tuple[int, ...]:
    """Indices of the options the gold ``answer`` designates: one, or several *identical* options (one answer).

    Raises ``ValueError`` when the answer designates no option or several different ones (a dataset bug).
    """
    from mapo.rewards import match_option, resolve_gold
    from mapo.rewards.extraction import text_key

    match = match_option(answer, choices, mode="exact")
    if len(match.indices) > 1 and len({text_key(choices[i]) for i in match.indices}) == 1:
        return match.indices
    return (resolve_gold(answer, choices),)


def _has_identical_options(choices: Sequence[str]) -> bool:
    from mapo.rewards.extraction import text_key

    keys = [text_key(c) for c in choices]
    return len(set(keys)) < len(keys)


def match_choice(prediction: str, answer: str, choices: Sequence[str], answer_match: str = "exact") -> bool:
    """Whether ``prediction`` answers the multiple-choice item correctly under r_acc's rules (eq. 6).

    Identical options are one answer: the final answer may name any copy of the correct option (by text or by
    letter); r_acc itself would call the text ambiguous.
    """
    from mapo.rewards import accuracy_reward, match_option
    from mapo.rewards.extraction import text_key

    if not _has_identical_options(choices):
        return (
            accuracy_reward(
                [prediction], answer=[answer], choices=[list(choices)], answer_match=answer_match
            )[0]
            == 1.0
        )
    gold = {text_key(choices[i]) for i in gold_options(answer, choices)}
    final = extract_final_answer(prediction)
    if final is None:
        return False
    match = match_option(final, choices, mode=answer_match)
    if not match.indices and answer_match == "contains":
        # "contains" sees the duplicated phrase twice; match it against the distinct options instead.
        distinct = list(dict.fromkeys(choices))
        match = match_option(final, distinct, mode="contains")
        return len(match.indices) == 1 and text_key(distinct[match.indices[0]]) in gold
    return bool(match.indices) and {text_key(choices[i]) for i in match.indices} <= gold


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------


def _set(pred: Prediction, score: float | None, reason: str = "") -> None:
    pred.score = score
    pred.reason = reason
    pred.correct = None if score is None or pred.kind == "open" else score == 1.0


def _score_local(pred: Prediction, answer_match: str, scorer: str = "strict") -> None:
    """Score a choice or instruction item (no judge needed)."""
    if scorer == "official" and pred.kind == "choice" and pred.choices and pred.answer is not None:
        # The official scripts grade every item they are given, including those the strict scorer leaves
        # unscored as dataset bugs (an answer that names no option scores 0 there).
        _score_official_choice(pred)
        return
    if pred.invalid:
        _set(pred, None, f"invalid item: {pred.invalid}")
        return
    if pred.kind == "choice":
        if not pred.choices or pred.answer is None:
            _set(pred, None, "invalid item: no choices or no answer")
            return
        _set(pred, 1.0 if match_choice(pred.prediction, pred.answer, pred.choices, answer_match) else 0.0)
    elif pred.kind == "instruction":
        meta = pred.meta or {}
        if scorer == "official":
            from mapo.eval.official import official_instruction

            # The script checks whatever text it is given: no final answer is an empty response.
            ok = official_instruction(
                meta.get("task_identifier"), meta.get("kwargs"), pred.extracted or "", pred.question
            )
            _set(pred, 1.0 if ok else 0.0)
            return
        if pred.extracted is None or not pred.extracted.strip():
            # No final answer: "no commas" or "at most N words" would pass on an empty string.
            _set(pred, 0.0)
            return
        try:
            ok = check_instruction(
                meta.get("task_identifier"), meta.get("kwargs"), pred.extracted, pred.question
            )
        except UncheckableInstruction as err:
            _set(pred, None, f"uncheckable instruction: {err}")
            return
        _set(pred, 1.0 if ok else 0.0)


def _score_official_choice(pred: Prediction) -> None:
    """The benchmark's published rule (:mod:`mapo.eval.official`) on the final answer."""
    from mapo.eval.official import mmau_pro_certain_option, mmsu_official_score, string_match

    assert pred.choices is not None and pred.answer is not None
    final = pred.extracted or ""
    if pred.benchmark == "mmsu":
        score = mmsu_official_score(final, pred.answer, pred.choices)
        if score is None:
            _set(pred, None, "official MMSU: wrong format (no A-D letter read), dropped from the denominator")
            return
        _set(pred, score)
    elif pred.benchmark == "mmau-pro":
        if len(pred.choices) < 2:
            _set(pred, None, "official MMAU-Pro: fewer than two choices, dropped by the script")
            return
        if pred.answer not in pred.choices:
            _set(pred, 0.0)  # the nearest option is always an option, and none is the gold text
            return
        idx = mmau_pro_certain_option(final, pred.choices)
        if idx is None:
            _set(
                pred,
                None,
                "official MMAU-Pro: nearest option needs the NV-Embed-v2 model (answer is not an option's text)",
            )
            return
        _set(pred, 1.0 if pred.choices[idx] == pred.answer else 0.0)
    else:  # MMAU, MMAR (and any other benchmark): string_match
        _set(pred, 1.0 if string_match(pred.answer, final, pred.choices) else 0.0)


def score_predictions(
    predictions: Iterable[Prediction],
    judge: Any = None,
    *,
    answer_match: str = "exact",
    rejudge: bool = False,
    scorer: str = "strict",
) -> list[Prediction]:
    """Fill ``extracted``, ``score``, ``correct`` and ``reason`` of every prediction (in place; returned).

    Args:
        judge: a :class:`mapo.rewards.JudgeClient` for open items, or ``None`` (open items stay unscored unless
            the prediction already carries a judge grade from an earlier run).
        answer_match: "exact" (default, r_acc's rule) or "contains" (see :func:`mapo.rewards.accuracy_reward`).
        rejudge: ask the judge again even for predictions that carry a grade.
        scorer: "strict" (default) or "official" (each benchmark's published rule, :mod:`mapo.eval.official`).
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    preds = list(predictions)
    to_judge: list[Prediction] = []
    for pred in preds:
        pred.extracted = extract_final_answer(pred.prediction)
        if pred.unreadable:
            _set(pred, None, f"unreadable audio: {pred.unreadable}")
            continue
        if pred.kind != "open":
            _score_local(pred, answer_match, scorer)
            continue
        if pred.invalid:
            _set(pred, None, f"invalid item: {pred.invalid}")
        elif pred.extracted is None:
            pred.judge = {"overall": 1.0, "note": "no final answer; lowest grade without a judge request"}
            _set(pred, NO_ANSWER_OPEN_SCORE)
        elif pred.judge and "overall" in pred.judge and not rejudge:
            _set(pred, float(pred.judge["overall"]) / 5.0)
        elif judge is None:
            _set(pred, None, "no judge: open-ended items need a judge (--judge-url)")
        else:
            to_judge.append(pred)
    if scorer == "official":
        from mapo.eval.official import official_open_score

        for pred in preds:
            if pred.kind == "open" and pred.score is not None:
                _set(pred, official_open_score(pred.judge))
    if to_judge:
        grades = grade_open(judge, [(p.question, p.answer or "", p.extracted or "") for p in to_judge])
        for pred, grade in zip(to_judge, grades):
            pred.judge = grade
            if "overall" in grade:
                if scorer == "official":
                    from mapo.eval.official import official_open_score

                    _set(pred, official_open_score(grade))
                else:
                    _set(pred, float(grade["overall"]) / 5.0)
            else:
                _set(pred, None, f"judge failed: {grade['error']}")
        failed = sum(1 for p in to_judge if p.score is None)
        if failed:
            logger.warning(
                "open-ended judge failed for %d of %d items (reported as unscored)", failed, len(to_judge)
            )
    return preds


# ---------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------


def _cell(preds: Sequence[Prediction]) -> dict[str, Any]:
    scored = [p.score for p in preds if p.score is not None]
    return {
        "accuracy": sum(scored) / len(scored) if scored else None,
        "score_sum": float(sum(scored)),
        "n_scored": len(scored),
        "n_items": len(preds),
    }


def _reason_key(reason: str) -> str:
    return reason.split(":", 1)[0]


def summarize(predictions: Iterable[Prediction]) -> dict[str, dict[str, Any]]:
    """Per benchmark: overall (micro-average over scored items), the paper's groups, breakdowns, unscored.

    Returns ``{benchmark: {"title", "overall", "groups", "breakdowns", "unscored", "n_overall_only"}}`` where each
    cell is ``{"accuracy" (fraction or None), "score_sum", "n_scored", "n_items"}``.
    """
    by_bench: dict[str, list[Prediction]] = defaultdict(list)
    for pred in predictions:
        by_bench[pred.benchmark].append(pred)
    out: dict[str, dict[str, Any]] = {}
    for bench in sorted(
        by_bench, key=lambda b: list(BENCHMARKS).index(b) if b in BENCHMARKS else len(BENCHMARKS)
    ):
        preds = by_bench[bench]
        spec = BENCHMARKS.get(bench)
        groups = list(spec.groups) if spec else sorted({p.category for p in preds if p.category})
        extra = sorted({p.category for p in preds if p.category and p.category not in groups})
        breakdowns: dict[str, dict[str, Any]] = {}
        for key in spec.breakdowns if spec else ():
            values = sorted({str(p.meta.get(key)) for p in preds if p.meta.get(key) is not None})
            breakdowns[key] = {v: _cell([p for p in preds if str(p.meta.get(key)) == v]) for v in values}
        out[bench] = {
            "title": spec.title if spec else bench,
            "overall": _cell(preds),
            "groups": {g: _cell([p for p in preds if p.category == g]) for g in groups + extra},
            "n_overall_only": sum(1 for p in preds if p.category is None),
            "breakdowns": breakdowns,
            "unscored": dict(Counter(_reason_key(p.reason) for p in preds if p.score is None)),
        }
    return out
