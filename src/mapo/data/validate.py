"""Check every training row before a model loads: one report with every bad row, clip-length statistics.

A bad row found by the sampler costs a crash hours into a run (and ``--resume_from_checkpoint latest`` replays the
order and crashes at the same step again). :func:`check_rows` runs, for every row of the training JSONL files:

* the structure (valid JSON, the required fields, ``choices`` a list of ≥ 2 texts, ``audio`` a path);
* the gold answer designates exactly one choice (:func:`mapo.rewards.resolve_gold`, as the accuracy reward reads
  it);
* the audio exists and decodes (:func:`mapo.data.clips.read_clip`, the reader training uses), and its duration lies
  in [``min_seconds``, ``max_seconds``]: the shortest clip the processor turns into an audio token, and the model
  family's longest kept clip (``ModalitySpec.max_audio_seconds``) under the long-audio policy (``error`` makes a
  longer clip a bad row; ``truncate`` keeps it and counts it).

The result is a :class:`DataReport`: the problems (``file:line``, id, reason), the durations of the usable clips and
their statistics. :class:`DataValidationError` (a ``ValueError``) carries the report when rows are bad and
``skip_invalid`` is off. ``mapo check-data FILE...`` prints the same report alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .clips import MIN_AUDIO_SECONDS, AudioReadError, apply_long_audio_policy, read_clip

logger = logging.getLogger(__name__)

#: Problems listed in an error message before "... and N more" (the full list: ``mapo check-data``).
MAX_LISTED = 50


@dataclass(frozen=True)
class RowProblem:
    """One unusable row: where it is, its id, and why."""

    file: str
    line: int
    row_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: id={self.row_id}: {self.reason}"


@dataclass(frozen=True)
class RowChecks:
    """What :func:`check_rows` checks.

    Attributes:
        check_audio: decode every clip (off: structure and gold answer only).
        sampling_rate: the feature extractor's rate (``ModalitySpec.sampling_rate``).
        min_seconds: shortest usable clip (the processor's minimum, :func:`processor_min_seconds`).
        max_seconds: the family's longest kept clip (``ModalitySpec.max_audio_seconds``); ``None`` = no limit.
        long_audio: ``"error"`` (a longer clip is a bad row) or ``"truncate"`` (kept; training keeps its first
            ``max_seconds``).
        workers: clips decoded in parallel (decoding releases the GIL).
    """

    check_audio: bool = True
    sampling_rate: int = 16000
    min_seconds: float = MIN_AUDIO_SECONDS
    max_seconds: float | None = None
    long_audio: str = "error"
    workers: int = 4

    def __post_init__(self) -> None:
        if self.long_audio not in ("error", "truncate"):
            raise ValueError(
                f"long_audio must be 'error' or 'truncate' for training data, got {self.long_audio!r}"
            )


@dataclass
class DataReport:
    """The outcome of :func:`check_rows` over one or several files."""

    rows: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    truncated: int = 0
    checks: RowChecks = field(default_factory=RowChecks)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_lines(self, limit: int | None = None) -> str:
        shown = self.problems if limit is None else self.problems[:limit]
        text = "\n".join(f"  {p}" for p in shown)
        if limit is not None and len(self.problems) > limit:
            text += f"\n  ... and {len(self.problems) - limit} more (mapo check-data FILE lists them all)"
        return text

    def stats(self) -> dict[str, float]:
        """Clip-length statistics (seconds) of the usable rows: count, min, p5, median, mean, p95, max, hours."""
        if not self.durations:
            return {"count": 0}
        d = np.asarray(self.durations, dtype=np.float64)
        return {
            "count": int(d.size),
            "min": float(d.min()),
            "p5": float(np.percentile(d, 5)),
            "median": float(np.median(d)),
            "mean": float(d.mean()),
            "p95": float(np.percentile(d, 95)),
            "max": float(d.max()),
            "hours": float(d.sum() / 3600),
        }

    def stats_line(self) -> str:
        s = self.stats()
        if not s["count"]:
            return "clip length: no usable clip"
        line = (
            f"clip length (s) of {s['count']} usable rows: min {s['min']:.2f}, p5 {s['p5']:.2f}, median "
            f"{s['median']:.2f}, mean {s['mean']:.2f}, p95 {s['p95']:.2f}, max {s['max']:.2f}; total "
            f"{s['hours']:.2f} h"
        )
        if self.checks.max_seconds is not None:
            line += f"; {self.truncated} longer than {self.checks.max_seconds:g} s"
            line += " (truncated in training)" if self.checks.long_audio == "truncate" else ""
        return line

    def merge(self, other: DataReport) -> None:
        self.rows += other.rows
        self.problems.extend(other.problems)
        self.durations.extend(other.durations)
        self.truncated += other.truncated


class DataValidationError(ValueError):
    """Some training rows are unusable; ``report`` lists them all."""

    def __init__(self, report: DataReport):
        self.report = report
        n = len(report.problems)
        super().__init__(
            f"{n} of {report.rows} training rows are unusable:\n{report.problem_lines(MAX_LISTED)}\nFix or remove "
            f"them, or train on the {report.rows - n} valid rows with --skip_invalid_rows (skip_invalid_rows: true)."
        )


def check_gold(answer: Any, choices: Any) -> str | None:
    """Why ``answer`` does not designate exactly one of ``choices`` (the accuracy reward's rule), or ``None``."""
    from ..rewards import resolve_gold

    try:
        resolve_gold(answer, choices)
    except (ValueError, TypeError) as err:
        return str(err).split("; fix the dataset row")[0]
    return None


def _audio_problem(audio: Any, checks: RowChecks) -> tuple[str | None, float | None, bool]:
    """(reason or None, duration in seconds, longer than max_seconds) of one clip."""
    try:
        wave = read_clip(audio, checks.sampling_rate, min_seconds=checks.min_seconds)
        seconds = wave.size / checks.sampling_rate
        apply_long_audio_policy(
            wave, checks.sampling_rate, checks.max_seconds, "error", min_seconds=checks.min_seconds
        )
    except AudioReadError as err:
        if err.code == "too_long" and checks.long_audio == "truncate":
            return None, seconds, True
        return f"audio {err.source}: {err.reason}", None, False
    return None, seconds, False


def check_rows(
    rows: Sequence[dict[str, Any]], checks: RowChecks | None = None
) -> tuple[list[int], DataReport]:
    """Check rows read by :func:`mapo.data.qa.read_jsonl` (each with ``source`` = ``"file:line"``).

    Returns the indices of the usable rows and the report. Structure problems found while reading are the
    caller's (they have no row); this checks the gold answer and, with ``checks.check_audio``, the clip.
    """
    checks = checks or RowChecks()
    report = DataReport(rows=len(rows), checks=checks)
    reasons: list[str | None] = [check_gold(r["answer"], r["choices"]) for r in rows]
    durations: list[float | None] = [None] * len(rows)
    if checks.check_audio:
        with ThreadPoolExecutor(max_workers=max(1, checks.workers)) as pool:
            results = list(pool.map(lambda r: _audio_problem(r["audio"], checks), rows))
        for i, (reason, seconds, long) in enumerate(results):
            if reason is not None:
                reasons[i] = f"{reasons[i]}; {reason}" if reasons[i] else reason
            durations[i] = seconds
            report.truncated += int(long and reasons[i] is None)
    good = []
    for i, (row, reason) in enumerate(zip(rows, reasons)):
        if reason is None:
            good.append(i)
            if durations[i] is not None:
                report.durations.append(durations[i])
        else:
            file, _, line = str(row.get("source", "?:0")).rpartition(":")
            report.problems.append(RowProblem(file, int(line or 0), str(row.get("id", "?")), reason))
    return good, report


def processor_min_seconds(processor: Any, audio_token_id: int, sampling_rate: int) -> float:
    """The shortest clip (10 ms steps, at least :data:`MIN_AUDIO_SECONDS`) the processor turns into ≥ 1 audio
    placeholder token. A shorter clip yields features but no placeholder, and the model's forward then fails
    deep inside transformers. Falls back to :data:`MIN_AUDIO_SECONDS` when the processor cannot be probed."""
    from .qa import audio_prompt

    def tokens(ms: int) -> int:
        wave = np.full(int(sampling_rate * ms / 1000), 0.01, dtype=np.float32)
        out = processor.apply_chat_template(
            [audio_prompt(wave, "x")], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        ids = out["input_ids"]
        ids = ids[0] if hasattr(ids, "__len__") and len(ids) and hasattr(ids[0], "__len__") else ids
        return int(sum(1 for t in list(ids) if int(t) == audio_token_id))

    try:
        lo, hi = 1, 1000  # ms; a clip of 1 s always gives tokens for the supported families
        if tokens(hi) == 0:
            return MIN_AUDIO_SECONDS
        while lo < hi:  # smallest ms with at least one token (the count grows with the length)
            mid = (lo + hi) // 2
            if tokens(mid) > 0:
                hi = mid
            else:
                lo = mid + 1
    except Exception as err:  # an unusual processor: keep the documented floor
        logger.debug(
            "could not probe the processor's shortest clip (%s); using %.3f s", err, MIN_AUDIO_SECONDS
        )
        return MIN_AUDIO_SECONDS
    return max(MIN_AUDIO_SECONDS, round(lo / 1000, 3))


def structure_problem(source: str, row_id: str, reason: str) -> RowProblem:
    """A :class:`RowProblem` from a ``"file:line"`` source (for problems found while reading the file)."""
    file, _, line = source.rpartition(":")
    return RowProblem(file, int(line or 0), row_id, reason)


def relative(path: str) -> str:
    """``path`` relative to the working folder when it is below it (shorter report lines)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
