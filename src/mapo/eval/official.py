"""``--scorer official``: each benchmark's published matching rule, quirks included, for numbers that sit next to
published ones. The default ``strict`` scorer (:mod:`mapo.eval.scoring`) stays the better *measure*; this one is
the comparable *number*. Written from the documented behaviour of the official scripts (``docs/eval.md``,
"Official scorers"); no official code is copied.

* **MMAU, MMAR** — ``string_match(answer, prediction, choices)``: word sets are the lower-cased ``\\w+`` tokens;
  the prediction is correct iff it contains every word of the answer and no word of the *other* options that is
  not also a word of the answer (an option whose word set equals the answer's is not "other"). An empty
  prediction is wrong. Quirks: hedges that repeat only the answer's words pass ("maybe piano, piano"); extra words
  pass ("it is a piano"); an answer whose words are all shared with another option still passes if the
  prediction names the answer.
* **MMSU** — the first character of the prediction is read as the option letter; a prediction whose first
  character is not one of the item's option letters is *unparseable* and dropped from the denominator (reported
  as unscored, reason ``official: unparseable``). Quirk: "Chocolate." reads as letter C.
* **MMAU-Pro** — closed items: the official script maps every output to the nearest option with an embedding
  model (NV-Embed-v2), which is not reproducible offline; here an output that designates exactly one option by
  the strict rules gets that option, and any other output is unscored (``official: needs the embedding model``)
  instead of guessed. Open items: a missing criterion grade counts 3, and an OVERALL that is missing or equal
  to 3 is replaced by the mean of the four criteria, then / 5. Instruction following: the project's checks.

What is fed to the rule: the final answer of the completion (text after ``</think>``, or the ``<answer>``
contents), as the MAPO release's normaliser does before calling the official scripts; a completion without a final
answer is an empty prediction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EXPORTS",
    "OFFICIAL_RULES",
    "export_official",
    "mmsu_first_letter",
    "official_open_score",
    "string_match",
]

#: benchmark -> the rule name reported in results.json.
OFFICIAL_RULES: dict[str, str] = {
    "mmau": "MMAU evaluation.py string_match",
    "mmar": "MMAR evaluation string_match",
    "mmsu": "MMSU first-character letter, unparseable answers dropped",
    "mmau-pro": "MMAU-Pro evaluation (closed: nearest option; open: OVERALL/5 with the 3 -> mean rule)",
}

_WORD = re.compile(r"\b\w+\b")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(str(text).lower()))


def string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """The MMAU / MMAR matching rule (module docstring)."""
    pred, gold = _words(prediction), _words(answer)
    if not pred:
        return False
    others: set[str] = set()
    for choice in choices:
        words = _words(choice)
        if words != gold:
            others |= words - gold
    return gold <= pred and not (pred & others)


def mmsu_first_letter(prediction: str, n_choices: int) -> int | None:
    """Option index read from the prediction's first character ("B. Chocolate" -> 1), ``None`` if unparseable."""
    text = prediction.strip()
    if not text:
        return None
    idx = "ABCDEFGHIJ".find(text[0])
    return idx if 0 <= idx < n_choices else None


def official_open_score(judge: dict[str, Any] | None) -> float | None:
    """MMAU-Pro's open-item score from stored judge grades: missing criteria count 3; OVERALL missing or equal to 3
    is replaced by the criteria mean; divided by 5. ``None`` when the judge gave nothing."""
    from mapo.eval.open_judge import CRITERIA

    if not judge or ("grades" not in judge and "overall" not in judge):
        return None
    grades = judge.get("grades") or {}
    criteria = [float(grades.get(c, 3.0)) for c in CRITERIA]
    overall = grades.get("overall", judge.get("overall"))
    if overall is None or float(overall) == 3.0:
        overall = sum(criteria) / len(criteria)
    return float(overall) / 5.0


#: benchmark -> (file name, the prediction key its official script reads).
EXPORTS: dict[str, tuple[str, str]] = {
    "mmau": ("mmau-test-mini_predictions.json", "model_prediction"),
    "mmar": ("MMAR-meta_predictions.json", "model_prediction"),
}


def export_official(predictions: Sequence[Any], out_dir: str) -> dict[str, str]:
    """Write each benchmark's official input file (MMAU, MMAR): a JSON list of the benchmark's records with the
    keys its script reads and the final answer under ``model_prediction`` (MMAU's README: "the original MMAU
    benchmark file with an additional key named 'model_prediction'"). Returns ``{benchmark: path}``.

    A prediction without a final answer is written with an empty ``model_prediction`` (the script counts it
    wrong); MMSU and MMAU-Pro are not exported (see ``docs/eval.md``).
    """
    import json
    import os

    os.makedirs(out_dir, exist_ok=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    for pred in predictions:
        if pred.benchmark not in EXPORTS:
            continue
        meta = dict(pred.meta or {})
        row: dict[str, Any] = {"id": pred.id, "question": pred.question, "choices": pred.choices}
        row["answer"] = pred.answer
        row.update({k: v for k, v in meta.items() if k not in ("kwargs", "task_identifier")})
        row[EXPORTS[pred.benchmark][1]] = pred.extracted or ""
        rows.setdefault(pred.benchmark, []).append(row)
    written = {}
    for bench, items in rows.items():
        path = os.path.join(out_dir, EXPORTS[bench][0])
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(items, fh, indent=2, ensure_ascii=False)
        written[bench] = path
    skipped = sorted({p.benchmark for p in predictions if p.benchmark not in EXPORTS})
    if skipped:
        import logging

        logging.getLogger(__name__).warning("--export-official: no official input format for %s", skipped)
    return written
