"""Audio question-answering data for GRPO/MAPO training: JSONL files, mixtures, conversational audio prompts.

The training format is one JSON object per line::

    {"audio": "clips/0001.wav", "question": "Which instrument plays the melody?",
     "choices": ["violin", "piano", "flute", "drums"], "answer": "piano", "domain": "music", "id": "mus-0001"}

* ``audio``: a path (relative paths are resolved against the JSONL file's folder), read lazily when a row is used
  and resampled to the feature extractor's rate. ``domain`` and ``id`` are optional and kept for logging.
* ``choices``: the option texts; ``answer``: the correct option's text (both are read by the rewards).

Rows become TRL conversational prompts with one audio part (``{"type": "audio", "audio": np.ndarray}``) in a
lazy transform, so the audio never goes through Arrow. Rows that already carry a ``prompt`` (e.g. a dataset saved
to Arrow/Parquet) are normalised: Arrow adds ``None`` keys to every content part (Qwen2-Audio's chat template
then emits one placeholder per part) and turns arrays into lists; both are undone.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .validate import DataReport, RowChecks, structure_problem

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = (
    "Think about the audio step by step inside <think> </think>, then give the final answer (the text of one "
    "option) inside <answer> </answer>."
)

REQUIRED_COLUMNS = ("audio", "question", "choices", "answer")


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def read_jsonl(path: str, problems: list | None = None) -> list[dict[str, Any]]:
    """The rows of one training JSONL file (module docstring), each with ``source`` = ``"file:line"``.

    A malformed line raises ``ValueError`` naming ``file:line``; with a ``problems`` list, it is appended there as a
    :class:`mapo.data.validate.RowProblem` instead and reading goes on (one report for the whole file).
    """
    rows = []
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TypeError(f"a line must hold one JSON object, got {type(row).__name__}")
            except (json.JSONDecodeError, TypeError) as err:
                reason = f"not valid JSON ({err.msg})" if isinstance(err, json.JSONDecodeError) else str(err)
                if problems is None:
                    raise ValueError(f"{where}: {reason}") from err
                problems.append(structure_problem(where, "?", reason))
                continue
            row_id = str(row.get("id", f"{os.path.basename(path)}:{lineno}"))
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                reason = f"missing field(s) {missing}; each line needs {REQUIRED_COLUMNS}"
            elif not isinstance(row["choices"], list) or len(row["choices"]) < 2:
                reason = "'choices' must be a list of at least two option texts"
            elif not isinstance(row["audio"], str):
                reason = "'audio' must be a file path (string)"
            else:
                reason = None
            if reason is not None:
                if problems is None:
                    raise ValueError(f"{where}: {reason}")
                problems.append(structure_problem(where, row_id, reason))
                continue
            audio = row["audio"] if os.path.isabs(row["audio"]) else os.path.join(base, row["audio"])
            rows.append(
                {
                    "audio": audio,
                    "question": str(row["question"]),
                    "choices": [str(c) for c in row["choices"]],
                    "answer": str(row["answer"]),
                    "domain": str(row.get("domain", "")),
                    "id": row_id,
                    "source": where,
                }
            )
    if not rows and problems is None:
        raise ValueError(f"{path}: no rows")
    return rows


def read_checked(
    paths: Sequence[str], checks: RowChecks | None = None, skip_invalid: bool = False
) -> tuple[list[list[dict[str, Any]]], DataReport]:
    """Read and check every row of every file (:mod:`mapo.data.validate`); one report for all of them.

    Raises :class:`~mapo.data.validate.DataValidationError` listing every bad row, unless ``skip_invalid``: then
    the bad rows are dropped and their count is logged. Returns the usable rows per file and the report.
    """
    from .validate import DataReport, DataValidationError, check_rows

    report = DataReport(checks=checks or RowChecks())
    sources = []
    for path in paths:
        structure: list = []
        rows = read_jsonl(path, structure)
        good, file_report = check_rows(rows, checks)
        file_report.rows += len(structure)
        file_report.problems[:0] = structure
        report.merge(file_report)
        sources.append([rows[i] for i in good])
    if report.problems and not skip_invalid:
        raise DataValidationError(report)
    if report.problems:
        logger.warning(
            "skip_invalid_rows: skipped %d of %d training rows (first: %s); training on %d",
            len(report.problems),
            report.rows,
            report.problems[0],
            report.rows - len(report.problems),
        )
    for path, src in zip(paths, sources):
        if not src:
            raise ValueError(f"{path}: no usable rows")
    return sources, report


def mixture_counts(sizes: Sequence[int], proportions: Sequence[float], total: int | None = None) -> list[int]:
    """Rows to draw from each source so the mixture has the given proportions.

    ``total`` defaults to the largest mixture that needs no repetition (``min_i size_i / p_i``). Counts are
    rounded with the largest-remainder rule so they sum exactly to ``total``.
    """
    if len(sizes) != len(proportions):
        raise ValueError(f"proportions has {len(proportions)} values for {len(sizes)} files")
    if any(p < 0 for p in proportions) or sum(proportions) <= 0:
        raise ValueError(f"proportions must be non-negative and not all zero, got {list(proportions)}")
    norm = [p / sum(proportions) for p in proportions]
    if total is None:
        total = int(min(s / p for s, p in zip(sizes, norm) if p > 0))
    raw = [p * total for p in norm]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def load_audio_qa(
    paths: str | Sequence[str],
    proportions: Sequence[float] | None = None,
    total: int | None = None,
    seed: int = 0,
    *,
    checks: RowChecks | None = None,
    skip_invalid: bool = False,
):
    """Load one or several JSONL files (see module docstring) as a ``datasets.Dataset``.

    Every row is checked first (:mod:`mapo.data.validate`: structure, gold answer among the choices, audio exists,
    decodes and has a usable length; ``checks`` sets the limits, default :class:`~mapo.data.validate.RowChecks`)
    and one :class:`~mapo.data.validate.DataValidationError` lists every bad row, unless ``skip_invalid`` drops
    them (count logged). With several files and ``proportions``, draw a mixture in those proportions (the paper's
    phase 2 mixes four domains); a source asked for more rows than it has is sampled with repetition, and this is
    logged.
    """
    from datasets import Dataset

    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError("paths: give at least one JSONL file")
    sources, _ = read_checked(paths, checks, skip_invalid)
    if proportions is None:
        rows = [r for src in sources for r in src]
    else:
        counts = mixture_counts([len(s) for s in sources], proportions, total)
        rng = np.random.default_rng(seed)
        rows = []
        for path, src, n in zip(paths, sources, counts):
            if n > len(src):
                logger.warning(
                    "%s: %d rows requested from %d available; sampling with repetition", path, n, len(src)
                )
            idx = rng.permutation(len(src))[:n] if n <= len(src) else rng.integers(0, len(src), size=n)
            rows.extend(src[i] for i in idx)
        order = rng.permutation(len(rows))
        rows = [rows[i] for i in order]
    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------


def format_question(
    question: str, choices: Sequence[str], instruction: str | None = DEFAULT_INSTRUCTION
) -> str:
    """The user text: question, lettered options, and the thinking-template instruction."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    options = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices))
    text = f"{question}\nOptions:\n{options}"
    return f"{text}\n{instruction}" if instruction else text


def audio_prompt(audio: np.ndarray, text: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """A TRL conversational prompt with one audio part followed by the text part."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append(
        {"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": text}]}
    )
    return messages


def _clean_part(part: dict[str, Any]) -> dict[str, Any]:
    """Undo Arrow's struct unification: drop ``None`` keys, turn list audio back into float32 arrays."""
    part = {k: v for k, v in part.items() if v is not None}
    if part.get("type") == "audio" and isinstance(part.get("audio"), list):
        part["audio"] = np.asarray(part["audio"], dtype=np.float32)
    return part


def normalise_prompt(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise a conversational prompt read back from Arrow (see module docstring)."""
    out = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, list):
            content = [_clean_part(p) for p in content]
        out.append({"role": message["role"], "content": content})
    return out


def count_audio_parts(prompt: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in prompt
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") == "audio"
    )


@dataclass
class AudioPromptTransform:
    """``dataset.with_transform`` function producing the ``prompt`` column with the audio loaded.

    Accepts rows with ``audio`` as a path, a float array, or a ``datasets.Audio`` dict (``array`` +
    ``sampling_rate``), or rows that already carry a conversational ``prompt``.
    """

    sampling_rate: int = 16000
    system_prompt: str | None = None
    instruction: str | None = DEFAULT_INSTRUCTION

    def load(self, audio: Any, where: str) -> np.ndarray:
        from transformers.audio_utils import load_audio

        if audio is None:
            raise ValueError(
                f"{where}: the row has no audio (column 'audio' is empty); MAPO needs one clip per row"
            )
        if isinstance(audio, str):
            if not os.path.exists(audio):
                raise FileNotFoundError(f"{where}: audio file not found: {audio}")
            return load_audio(audio, sampling_rate=self.sampling_rate, backend="soundfile").astype(np.float32)
        if isinstance(audio, dict) and "array" in audio:
            arr = np.asarray(audio["array"], dtype=np.float32)
            sr = int(audio.get("sampling_rate") or self.sampling_rate)
            if sr != self.sampling_rate:
                import soxr

                arr = soxr.resample(arr, sr, self.sampling_rate).astype(np.float32)
            return arr
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{where}: audio must be a 1-D waveform, got shape {arr.shape}")
        return arr

    def row_prompt(self, row: dict[str, Any], where: str) -> list[dict[str, Any]]:
        if row.get("prompt") is not None:
            prompt = normalise_prompt(row["prompt"])
            if count_audio_parts(prompt) != 1:
                raise ValueError(
                    f"{where}: the prompt has {count_audio_parts(prompt)} audio parts; exactly one is supported"
                )
            return prompt
        if "audio" not in row or row.get("question") is None:
            raise ValueError(f"{where}: a row needs 'audio' and 'question' (or a conversational 'prompt')")
        text = format_question(row["question"], row.get("choices") or [], self.instruction)
        return audio_prompt(self.load(row["audio"], where), text, self.system_prompt)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        n = len(next(iter(batch.values())))
        rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
        out = {k: list(v) for k, v in batch.items()}
        out["prompt"] = [self.row_prompt(r, f"row id={r.get('id', i)}") for i, r in enumerate(rows)]
        out.pop("audio", None)  # the waveform now lives inside the prompt
        return out


def with_audio_prompts(
    dataset, transform: AudioPromptTransform | Callable | None = None, sampling_rate: int = 16000
):
    """Attach the lazy :class:`AudioPromptTransform` to ``dataset`` (a ``datasets.Dataset``)."""
    transform = transform or AudioPromptTransform(sampling_rate=sampling_rate)
    return dataset.with_transform(transform)
