"""``--scorer official``: each benchmark's published matching rule, quirks included, for numbers that sit next to
published ones. The default ``strict`` scorer (:mod:`mapo.eval.scoring`) stays the better *measure*; this one is
the comparable *number*. Written from the official scripts as read at the commits listed in ``docs/eval.md``
("What was verified"); no official code is copied.

* **MMAU, MMAR** — ``string_match(answer, prediction, choices)``: word sets are the lower-cased ``\\w+`` tokens;
  the prediction is correct iff it contains every word of the answer and no word of the *other* options that is
  not also a word of the answer (an option whose word set equals the answer's is not "other"). An empty
  prediction is wrong. Quirks: hedges that repeat only the answer's words pass ("maybe piano, piano"); extra words
  pass ("it is a piano"); an answer whose words are all shared with another option still passes if the
  prediction names the answer.
* **MMSU** (``mmsu_evaluation.py``) — the response is stripped and its newlines removed; its first character is
  the option letter if it is ``A``–``D``, else its second-to-last character if that is ("The answer is B." → B);
  any other non-empty response is a "wrong format" and dropped from the denominator (unscored, reason
  ``official MMSU``); an empty response (or the text "None") stays in the denominator and is wrong. Correct iff
  the letter's option text is exactly the gold ``answer_gt``. Quirks: "Chocolate." reads as C, "Definitely B."
  as D, "The answer is B" (no period) is dropped, "b" is dropped, only A–D are read.
* **MMAU-Pro** (``evaluate_mmau_pro_comprehensive.py``) — closed items: the script maps every output to the
  nearest option by NV-Embed-v2 cosine similarity, then compares that option's text with ``answer`` (exact
  string); items with fewer than two choices are dropped. The embedding model is not run here: an output whose
  text is an option's text (:func:`mmau_pro_certain_option`) gets that option, an item whose ``answer`` is no
  option's exact text is wrong whatever the output, and any other output is unscored
  (``official MMAU-Pro: … NV-Embed-v2 …``) instead of guessed. Open items: a missing criterion grade counts 3,
  and an OVERALL that is missing or equal to 3 is replaced by the mean of the four criteria, then / 5.
  Instruction following: :func:`official_instruction`, the script's checks with their quirks.

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
    "mmau_pro_certain_option",
    "MMSU_LETTERS",
    "mmsu_official_score",
    "mmsu_read_letter",
    "official_instruction",
    "official_open_score",
    "string_match",
]

#: benchmark -> the rule name reported in results.json.
OFFICIAL_RULES: dict[str, str] = {
    "mmau": "MMAU evaluation.py string_match (Sakshi113/MMAU @ 7468292)",
    "mmar": "MMAR evaluation.py string_match (thameran/MMAR @ 6249700)",
    "mmsu": "mmsu_evaluation.py: first (else second-to-last) character A-D, exact option text; "
    "wrong formats dropped (dingdongwang/MMSU @ 698fac8)",
    "mmau-pro": "evaluate_mmau_pro_comprehensive.py: closed nearest option (only certain items scored here), "
    "open OVERALL/5 with the 3 -> mean rule, the script's AIF checks (sonalkum/MMAUPro @ bf12804)",
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


#: The letters MMSU's evaluation script reads (``choice_a`` … ``choice_d``; a fifth option is never read).
MMSU_LETTERS = "ABCD"


def mmsu_read_letter(response: str) -> str | None:
    """The option letter MMSU's evaluation script reads from a response.

    The response is stripped and its newlines removed; then the first character is the letter if it is one of
    ``A``–``D`` (upper case), else the second-to-last character if *that* is one ("The answer is B." → B).
    Returns ``""`` for an empty response or the literal ``"None"`` (kept in the denominator and counted wrong)
    and ``None`` for any other response (a "wrong format": dropped from the denominator).
    """
    text = str(response).strip().replace("\n", "")
    if not text or text == "None":
        return ""
    if text[0] in MMSU_LETTERS:
        return text[0]
    if len(text) > 1 and text[-2] in MMSU_LETTERS:
        return text[-2]
    return None


def mmsu_official_score(response: str, answer: str, choices: Sequence[str]) -> float | None:
    """MMSU's published rule: 1.0 iff the option of the letter read (:func:`mmsu_read_letter`) is *exactly* the
    gold text ``answer`` (no normalisation); 0.0 for an empty response; ``None`` when the script drops the item."""
    letter = mmsu_read_letter(response)
    if letter is None:
        return None
    if not letter:
        return 0.0
    idx = MMSU_LETTERS.index(letter)
    option = choices[idx] if idx < len(choices) else ""  # a missing choice_x reads as ""
    return 1.0 if option == answer else 0.0


def mmau_pro_certain_option(prediction: str, choices: Sequence[str]) -> int | None:
    """The option MMAU-Pro's NV-Embed-v2 matching certainly picks, or ``None`` when only the model could tell.

    Certain: the prediction's text *is* an option's text up to case and punctuation (``text_key``), and every
    option with that key is the same string. A letter ("B"), extra words ("It is a piano") or an empty
    prediction are embedded by the official script and land on whichever option is nearest: not reproducible
    offline, so ``None`` (the item is left unscored instead of guessed).
    """
    from mapo.rewards import match_option

    if not prediction.strip():
        return None
    match = match_option(prediction, choices, mode="exact")
    if match.how != "text" or len({choices[i] for i in match.indices}) != 1:
        return None
    return match.indices[0]


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


# ---------------------------------------------------------------------------------------------------------------
# MMAU-Pro instruction following, as the official script checks it
# ---------------------------------------------------------------------------------------------------------------


def _listed(value: Any) -> list[str]:
    """``keywords`` / ``forbidden_words``: the release stores ``"a, b"`` and the script splits on ``", "``."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value if value is not None else "").split(", ")


def _alpha(text: str, keep_space: bool) -> str:
    return re.sub(r"[^a-zA-Z ]" if keep_space else r"[^a-zA-Z]", "", text).lower()


def _capitals(text: str) -> int:
    return sum(1 for w in text.split() if w.isupper())


def _n(kwargs: dict[str, Any], key: str, default: float) -> float:
    value = kwargs.get(key)
    return default if value is None else float(value)


def official_instruction(
    task_identifier: str | None, kwargs: dict[str, Any] | None, response: str, question: str = ""
) -> bool:
    """MMAU-Pro's instruction-following check as its evaluation script applies it (``docs/eval.md``).

    Departures from the strict checks (:mod:`mapo.eval.instruction_following`), all reproduced here: keywords
    and forbidden words are case-insensitive *substrings* (split on ``", "``); missing ``kwargs`` take the
    script's defaults (``N`` 0, ``N1`` 0, ``N2`` 999, phrases ""); an unknown identifier fails; the checks run on
    whatever text is given, so an empty response passes "No Commas" or "at most N words". Sentences are counted
    with :func:`mapo.eval.instruction_following.count_sentences` (the script uses NLTK punkt, whose data is not
    downloaded here).
    """
    from mapo.eval.instruction_following import count_sentences

    k = dict(kwargs or {})
    r = str(response)
    low = r.lower()
    tid = task_identifier or ""
    n = _n(k, "N", 0)
    lo, hi = _n(k, "N1", 0), _n(k, "N2", 999)
    if tid == "Include Keywords":
        return all(w.lower() in low for w in _listed(k.get("keywords", "")))
    if tid == "Forbidden Words":
        return not any(w.lower() in low for w in _listed(k.get("forbidden_words", "")))
    if tid == "Keyword Frequency":
        word = str(k.get("keyword") or "").lower()
        return len(re.findall(r"\b" + re.escape(word) + r"\b", low)) == n
    if tid == "Number Paragraphs":
        return sum(1 for part in r.split("***") if part.strip()) == n
    if tid.startswith("Number Words ("):
        count = len(r.split())
    elif tid.startswith("Number Sentences ("):
        count = count_sentences(r)
    elif tid.startswith("All-capital Words ("):
        count = _capitals(r)
    else:
        count = None
    if count is not None:
        kind = tid[tid.index("(") + 1 : -1]
        return {"at least": count >= n, "at most": count <= n, "range": lo <= count <= hi}.get(kind, False)
    if tid == "Postscript":
        return _alpha(str(k.get("postscript_marker") or ""), False) in _alpha(r, False)
    if tid == "Number Placeholder":
        return len(re.findall(r"\[[^\]]+\]", r)) >= n
    if tid == "Number Bullets":
        return len(re.findall(r"(?:^|\n)\s*\*\s+", r)) == n
    if tid == "Title":
        return re.search(r"<<[^>]+>>", r) is not None
    if tid == "Minimum Number Highlighted Section":
        return len(re.findall(r"\*([^*]+)\*", r)) >= n
    if tid == "Multiple Sections":
        splitter = re.escape(str(k.get("section_splitter") or ""))
        return sum(1 for part in re.split(rf"\s*{splitter}\s*", r.strip()) if part.strip()) == n
    if tid == "Repeat Prompt":
        return low.strip().startswith(str(question).strip().lower())
    if tid == "Two Responses":
        parts = r.split("******")
        return len(parts) == 2 and parts[0].lower().strip() != parts[1].lower().strip()
    if tid == "All Uppercase":
        return r.isupper()
    if tid == "All Lowercase":
        return r.islower()
    if tid == "Start Checker":
        return _alpha(r, True).startswith(_alpha(str(k.get("start_phrase") or ""), True))
    if tid == "End Checker":
        return _alpha(r, True).endswith(_alpha(str(k.get("end_phrase") or ""), True))
    if tid == "Quotation":
        return r.strip().startswith('"') and r.strip().endswith('"')
    if tid == "No Commas":
        return "," not in r
    return False


# ---------------------------------------------------------------------------------------------------------------
# Input files for the unmodified official scripts (--export-official)
# ---------------------------------------------------------------------------------------------------------------

#: benchmark -> (file name, the key under which its official script reads the model's answer).
EXPORTS: dict[str, tuple[str, str]] = {
    "mmau": ("mmau-test-mini_predictions.json", "model_output"),
    "mmar": ("MMAR-meta_predictions.json", "model_prediction"),
    "mmsu": ("mmsu_predictions.jsonl", "response"),
    "mmau-pro": ("mmau-pro_predictions.parquet", "model_output"),
}

_LETTERS = "abcdefghij"


def _mmau_like_row(pred: Any, answer: str) -> dict[str, Any]:
    """MMAU / MMAR: the benchmark record (a JSON list entry) plus the answer under both names in use."""
    row: dict[str, Any] = {
        "id": pred.id,
        "question": pred.question,
        "choices": pred.choices,
        "answer": pred.answer,
    }
    row.update(dict(pred.meta or {}))
    # MMAU's evaluation.py reads "model_output" since 2025-01 (its README still says "model_prediction");
    # MMAR's reads "model_prediction". Each script reads only its own key, so both are written.
    row["model_output"] = row["model_prediction"] = answer
    return row


def _mmsu_row(pred: Any, answer: str) -> dict[str, Any]:
    """MMSU: the line ``mmsu_inference.py`` writes — the dataset fields plus ``response``."""
    meta = dict(pred.meta or {})
    row: dict[str, Any] = {"id": pred.id, "question": pred.question}
    for i, choice in enumerate(pred.choices or []):
        row[f"choice_{_LETTERS[i]}"] = choice
    row["answer_gt"] = pred.answer
    row["response"] = answer
    for key in ("task_name", "category", "sub-category", "sub-sub-category", "linguistics_sub_discipline"):
        if key in meta:
            row[key] = meta[key]
    return row


def _official_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """``kwargs`` as the release stores them: lists of words joined with ", " (the script splits on it)."""
    if not kwargs:
        return None
    return {k: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in kwargs.items()}


def _mmau_pro_row(pred: Any, answer: str) -> dict[str, Any]:
    """MMAU-Pro: the columns ``evaluate_mmau_pro_comprehensive.py`` reads plus ``model_output``."""
    meta = dict(pred.meta or {})
    return {
        "id": pred.id,
        "question": pred.question,
        "category": meta.get("category", pred.category),
        "choices": pred.choices,
        "answer": pred.answer,
        "task_identifier": meta.get("task_identifier"),
        "kwargs": _official_kwargs(meta.get("kwargs")),
        "model_output": answer,
    }


def _kwargs_type(kwargs: list[dict[str, Any] | None]) -> Any:
    """The struct type of the ``kwargs`` column (one field per key in use), as in the hub release."""
    import pyarrow as pa

    fields = []
    for key in sorted({k for kw in kwargs if kw for k in kw}):
        values = [kw[key] for kw in kwargs if kw and kw.get(key) is not None]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            fields.append(pa.field(key, pa.string()))
        elif all(float(v).is_integer() for v in values):
            fields.append(pa.field(key, pa.int64()))
        else:
            fields.append(pa.field(key, pa.float64()))
    return pa.struct(fields) if fields else pa.null()


def _cast(value: Any, typ: Any) -> Any:
    import pyarrow as pa

    if value is None:
        return None
    if typ == pa.int64():
        return int(value)
    return float(value) if typ == pa.float64() else str(value)


def _write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kw_type = _kwargs_type([r["kwargs"] for r in rows])
    fields = list(kw_type) if kw_type != pa.null() else []
    table_rows = []
    for r in rows:
        kw = r["kwargs"]
        if kw and fields:
            kw = {f.name: _cast(kw.get(f.name), f.type) for f in fields}
        table_rows.append({**r, "kwargs": kw or None})
    text = pa.string()
    schema = pa.schema(
        [
            ("id", text),
            ("question", text),
            ("category", text),
            ("choices", pa.list_(text)),
            ("answer", text),
            ("task_identifier", text),
            ("kwargs", kw_type),
            ("model_output", text),
        ]
    )
    pq.write_table(pa.Table.from_pylist(table_rows, schema=schema), path)


def export_official(predictions: Sequence[Any], out_dir: str) -> dict[str, str]:
    """Write each benchmark's official input file into ``out_dir``; returns ``{benchmark: path}``.

    * MMAU, MMAR: a JSON list of the benchmark's records (``id``, ``question``, ``choices``, ``answer`` and the
      metadata fields: ``task``/``difficulty``/``sub-category`` for MMAU, ``modality``/``category``/
      ``sub-category`` for MMAR) with the answer under ``model_output`` (MMAU's ``evaluation.py``) and
      ``model_prediction`` (MMAR's ``evaluation.py``).
    * MMSU: JSON lines as ``mmsu_inference.py`` writes them (``choice_a`` …, ``answer_gt``, ``category``,
      ``sub-category``, …) with the answer under ``response``, for ``mmsu_evaluation.py``.
    * MMAU-Pro: a parquet file with the columns ``evaluate_mmau_pro_comprehensive.py`` reads (``question``,
      ``category``, ``choices``, ``answer``, ``task_identifier``, ``kwargs`` as a struct) plus ``model_output``
      (the script's default ``--model_output_column``).

    The answer written is the completion's final answer (``""`` when there is none), the same text
    ``--scorer official`` scores. Items whose audio could not be read have no model output and are left out
    (``--scorer official`` leaves them unscored).
    """
    import json
    import logging
    import os

    log = logging.getLogger(__name__)
    os.makedirs(out_dir, exist_ok=True)
    build = {"mmau": _mmau_like_row, "mmar": _mmau_like_row, "mmsu": _mmsu_row, "mmau-pro": _mmau_pro_row}
    rows: dict[str, list[dict[str, Any]]] = {}
    unreadable: dict[str, int] = {}
    for pred in predictions:
        if pred.benchmark not in build:
            continue
        if pred.unreadable:
            unreadable[pred.benchmark] = unreadable.get(pred.benchmark, 0) + 1
            continue
        rows.setdefault(pred.benchmark, []).append(build[pred.benchmark](pred, pred.extracted or ""))
    written = {}
    for bench, items in rows.items():
        path = os.path.join(out_dir, EXPORTS[bench][0])
        if bench == "mmau-pro":
            _write_parquet(items, path)
        else:
            with open(path, "w", encoding="utf-8") as fh:
                if path.endswith(".jsonl"):
                    fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in items)
                else:
                    json.dump(items, fh, indent=2, ensure_ascii=False)
        written[bench] = path
    for bench, n in sorted(unreadable.items()):
        log.warning(
            "--export-official: %d %s item(s) with unreadable audio left out (no model output)", n, bench
        )
    skipped = sorted({p.benchmark for p in predictions if p.benchmark not in build})
    if skipped:
        log.warning("--export-official: no official input format for %s", skipped)
    return written
