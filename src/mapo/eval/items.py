"""The two records of the evaluation: a benchmark item and a scored prediction.

An :class:`EvalItem` is one benchmark question in a common shape, whatever the benchmark's JSON looked like
(:mod:`mapo.eval.loaders`). A :class:`Prediction` is what the runner writes, one JSON object per line: everything
needed to score the item again without the model, the dataset file or the audio (``mapo eval --predictions``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["KINDS", "EvalItem", "Prediction"]

#: How an item is scored: "choice" (multiple choice, the accuracy reward's rules), "instruction" (deterministic
#: instruction-following checks), "open" (an LLM judge on a 1-5 scale).
KINDS: tuple[str, ...] = ("choice", "instruction", "open")


@dataclass
class EvalItem:
    """One benchmark question.

    Attributes:
        id: the benchmark's item id (made unique per file by the loader).
        benchmark: "mmau", "mmar", "mmsu" or "mmau-pro".
        group: the column of the paper's table the item is reported in (e.g. "sound", "perception", "closed"), or
            ``None`` for items counted in the overall score only (MMAR's mixed-modality items).
        kind: one of :data:`KINDS`.
        audio: the item's clips (one for all benchmarks except a few MMAU-Pro items): absolute paths, or
            ``{"bytes", "path"}`` dicts of audio embedded in a parquet release (read by :mod:`mapo.data.clips`).
        question: the question text shown to the model.
        choices: option texts for "choice" items, ``None`` otherwise.
        answer: the correct option's text ("choice"), the reference answer ("open"), ``None`` ("instruction").
        meta: raw fields kept for breakdowns and checks (difficulty, sub-category, task_identifier, kwargs...).
        invalid: why the item cannot be scored (e.g. its answer names no option); "" when it is valid.
    """

    id: str
    benchmark: str
    group: str | None
    kind: str
    audio: list[Any]
    question: str
    choices: list[str] | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    invalid: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r} (item {self.id})")


@dataclass
class Prediction:
    """One line of a predictions JSONL file: the item, the model's output and its score.

    ``score`` is 1.0/0.0 for "choice" and "instruction" items, the judge's grade / 5 for "open" items, and
    ``None`` when the item is unscored (``reason`` says why). ``correct`` is ``score == 1`` for binary kinds and
    ``None`` for open items and unscored items. ``judge`` keeps the judge's raw grades so that re-scoring a file
    reproduces the judged result without asking the judge again. ``unreadable`` says why the item's audio could
    not be used (missing, undecodable, too short or too long: ``mapo.data.clips.AudioReadError``); such an item
    is unscored, never a crash.
    """

    id: str
    benchmark: str
    category: str | None
    kind: str
    question: str
    choices: list[str] | None
    answer: str | None
    meta: dict[str, Any]
    prediction: str
    extracted: str | None = None
    score: float | None = None
    correct: bool | None = None
    reason: str = ""
    invalid: str = ""
    judge: dict[str, Any] | None = None
    unreadable: str = ""

    @classmethod
    def from_item(cls, item: EvalItem, prediction: str) -> Prediction:
        return cls(
            id=item.id,
            benchmark=item.benchmark,
            category=item.group,
            kind=item.kind,
            question=item.question,
            choices=list(item.choices) if item.choices is not None else None,
            answer=item.answer,
            meta=dict(item.meta),
            prediction=prediction,
            invalid=item.invalid,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any], where: str = "prediction") -> Prediction:
        missing = [k for k in ("id", "benchmark", "kind", "prediction") if k not in row]
        if missing:
            raise ValueError(
                f"{where}: missing field(s) {missing}; a predictions file is written by `mapo eval` (one JSON "
                "object per line with id, benchmark, category, kind, question, choices, answer, meta, prediction)"
            )
        if row["kind"] not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {row['kind']!r}")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in row.items() if k in known}
        kwargs.setdefault("category", None)
        kwargs.setdefault("question", "")
        kwargs.setdefault("choices", None)
        kwargs.setdefault("answer", None)
        kwargs.setdefault("meta", {})
        return cls(**kwargs)
