"""Loaders for local copies of MMAU (test-mini), MMAR, MMSU and MMAU-Pro in their published formats.

Nothing is downloaded: the user points at the benchmark's metadata file and, optionally, an audio root. Each
loader turns the benchmark's records into :class:`~mapo.eval.items.EvalItem` with the paper's grouping (Tables 2
and 3). The formats, with one example record each, are documented in ``docs/eval.md``; in short:

* **MMAU** (``mmau-test-mini.json``, a JSON list): ``id``, ``audio_id`` ("./test-mini-audios/<id>.wav"),
  ``question``, ``choices`` (list), ``answer`` (option text), ``task`` (sound / music / speech → the group),
  ``category``, ``sub-category``, ``difficulty``, ``dataset``, ``split``.
* **MMAR** (``MMAR-meta.jsonl`` of the current release, one object per line; the older ``MMAR-meta.json`` list
  is read too): ``id``, ``audio_path`` ("./audio/<id>.wav"), ``question``,
  ``choices``, ``answer``, ``modality`` (sound, music, speech, or a mix such as "mix-sound-speech"),
  ``category`` ("Signal Layer" ...), ``sub-category``, ``language``, ``source``, ``url``, ``timestamp``. Mixed
  modalities have no column in Table 2: they count in the overall score only (group ``None``).
* **MMSU** (JSONL, JSON list, or the hub parquet): ``id``, ``audio_path`` (relative to the data root, sometimes
  with a leading "/") or ``audio`` (the parquet's ``{"bytes", "path"}`` struct, the ``datasets.Audio`` layout), ``question``, ``choice_a`` … ``choice_d`` (up to ``choice_g``, or a ``choices`` list / letter dict),
  ``answer_gt`` (option text), ``category`` (Perception / Reasoning → the group, case-insensitive),
  ``sub-category``, ``sub-sub-category``, ``task_name``.
* **MMAU-Pro** (JSON list, JSONL or the released parquet): ``id``, ``audio_path`` (a list of paths) or ``audio``
  (``{"bytes", "path"}`` structs),
  ``question``, ``choices``, ``answer``, ``category`` ("instruction following", "open", or a closed category
  such as "sound" or "music"), ``task_identifier`` and ``kwargs`` (instruction-following items).

Audio paths: an existing absolute path is used as is; otherwise a leading "./" or "/" is dropped and the path is
joined to ``audio_root`` (default: the folder of the metadata file).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mapo.eval.items import EvalItem

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "load_benchmark",
    "load_mmar",
    "load_mmau",
    "load_mmau_pro",
    "load_mmsu",
    "read_records",
]

logger = logging.getLogger(__name__)

_MODALITIES = ("sound", "music", "speech")


# ---------------------------------------------------------------------------------------------------------------
# Files and paths
# ---------------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy arrays/scalars (parquet) → Python lists/scalars; recursively for dicts and lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_records(path: str) -> list[dict[str, Any]]:
    """Records of a ``.json`` (list of objects), ``.jsonl`` (one object per line) or ``.parquet`` file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"benchmark file not found: {path}")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [_plain(r) for r in pq.read_table(path).to_pylist()]
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".jsonl") or not text.lstrip().startswith("["):
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    else:
        rows = json.loads(text)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a JSON list of objects or one JSON object per line")
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def _resolve_audio(value: Any, audio_root: str) -> Any:
    """A path joined to ``audio_root``; an embedded ``{"bytes", "path"}`` clip kept as is (read by
    :mod:`mapo.data.clips`), a ``{"bytes": None, "path"}`` one resolved as a path."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return {"bytes": value["bytes"], "path": value.get("path")}
        value = value.get("path") or ""
    if os.path.isabs(value) and os.path.exists(value):
        return value
    rel = value[2:] if value.startswith("./") else value.lstrip("/")
    return os.path.normpath(os.path.join(audio_root, rel))


def _is_clip(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, dict) and (value.get("bytes") is not None or bool(value.get("path")))


def _audio_list(value: Any, where: str) -> list[Any]:
    """The item's clips: paths, or the parquet / ``datasets.Audio`` ``{"bytes", "path"}`` layout."""
    value = value if isinstance(value, dict) else _plain(value)
    if _is_clip(value):
        return [value]
    if isinstance(value, list) and value and all(_is_clip(v) for v in value):
        return list(value)
    shown = (
        {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in value.items()}
        if isinstance(value, dict)
        else value
    )
    raise ValueError(
        f"{where}: the audio must be a path, a {{'bytes', 'path'}} dict, or a non-empty list of them; got {shown!r}"
    )


def _pick_audio(row: dict[str, Any]) -> Any:
    """The hub parquet releases (MMSU, MMAU-Pro) embed the clip in ``audio`` as ``{"bytes", "path"}``; other
    copies give ``audio_path``. Embedded bytes win (no audio root needed)."""
    embedded = row.get("audio")
    if _is_clip(embedded) or (isinstance(embedded, list) and embedded and all(_is_clip(a) for a in embedded)):
        return embedded
    return row.get("audio_path", embedded)


def _require(row: dict[str, Any], keys: Sequence[str], where: str, fmt: str) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise ValueError(
            f"{where}: missing field(s) {missing}; the {fmt} format needs {list(keys)} (docs/eval.md)"
        )


def _check_choice(item: EvalItem) -> EvalItem:
    """Mark a multiple-choice item invalid when it cannot be scored, instead of scoring it 0."""
    if not item.choices or len(item.choices) < 2:
        item.invalid = f"fewer than two choices ({item.choices!r})"
        return item
    from mapo.eval.scoring import gold_options

    try:
        gold_options(str(item.answer), item.choices)  # identical options are one answer
    except ValueError as err:
        item.invalid = f"answer does not designate one option: {err}"
    return item


# ---------------------------------------------------------------------------------------------------------------
# The four benchmarks
# ---------------------------------------------------------------------------------------------------------------


def load_mmau(rows: list[dict[str, Any]], audio_root: str, where: str = "mmau") -> list[EvalItem]:
    """MMAU test-mini: group = ``task`` (sound / music / speech)."""
    items = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        audio = row.get("audio_id", row.get("audio_path"))
        _require(
            {**row, "audio_id": audio},
            ("id", "audio_id", "question", "choices", "answer", "task"),
            at,
            "MMAU",
        )
        task = str(row["task"]).strip().lower()
        item = EvalItem(
            id=str(row["id"]),
            benchmark="mmau",
            group=task if task in _MODALITIES else None,
            kind="choice",
            audio=[_resolve_audio(a, audio_root) for a in _audio_list(audio, at)],
            question=str(row["question"]),
            choices=[str(c) for c in _plain(row["choices"])],
            answer=str(row["answer"]),
            meta={k: row.get(k) for k in ("task", "difficulty", "sub-category", "category", "dataset")},
        )
        items.append(_check_choice(item))
    return items


def load_mmar(rows: list[dict[str, Any]], audio_root: str, where: str = "mmar") -> list[EvalItem]:
    """MMAR: group = ``modality`` for sound / music / speech; mixed modalities → overall only."""
    items = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        _require(row, ("audio_path", "question", "choices", "answer", "modality"), at, "MMAR")
        modality = str(row["modality"]).strip().lower()
        item = EvalItem(
            id=str(row.get("id", i)),
            benchmark="mmar",
            group=modality if modality in _MODALITIES else None,
            kind="choice",
            audio=[_resolve_audio(a, audio_root) for a in _audio_list(row["audio_path"], at)],
            question=str(row["question"]),
            choices=[str(c) for c in _plain(row["choices"])],
            answer=str(row["answer"]),
            meta={k: row.get(k) for k in ("modality", "category", "sub-category", "language")},
        )
        items.append(_check_choice(item))
    return items


def _mmsu_choices(row: dict[str, Any]) -> list[str]:
    value = _plain(row.get("choices"))
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value)]
    if isinstance(value, list):
        return [str(c) for c in value]
    keys = [f"choice_{c}" for c in "abcdefg"]
    return [str(row[k]) for k in keys if row.get(k) not in (None, "")]


def load_mmsu(rows: list[dict[str, Any]], audio_root: str, where: str = "mmsu") -> list[EvalItem]:
    """MMSU: group = ``category`` (perception / reasoning, case-insensitive)."""
    items = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        audio = _pick_audio(row)
        _require(
            {**row, "audio_path": audio},
            ("id", "audio_path", "question", "answer_gt", "category"),
            at,
            "MMSU",
        )
        category = str(row["category"]).strip().lower()
        item = EvalItem(
            id=str(row["id"]),
            benchmark="mmsu",
            group=category if category in ("perception", "reasoning") else None,
            kind="choice",
            audio=[_resolve_audio(a, audio_root) for a in _audio_list(audio, at)],
            question=str(row["question"]),
            choices=_mmsu_choices(row),
            answer=str(row["answer_gt"]),
            meta={
                k: row.get(k)
                for k in (
                    "category",
                    "sub-category",
                    "sub-sub-category",
                    "task_name",
                    "linguistics_sub_discipline",
                )
            },
        )
        items.append(_check_choice(item))
    return items


def _kwargs(value: Any, where: str) -> dict[str, Any]:
    value = _plain(value)
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: 'kwargs' is a string but not JSON ({err.msg})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{where}: 'kwargs' must be an object, got {type(value).__name__}")
    # Parquet unifies the structs of all rows: keys of other task types come back as None.
    return {k: v for k, v in value.items() if v is not None}


def load_mmau_pro(rows: list[dict[str, Any]], audio_root: str, where: str = "mmau-pro") -> list[EvalItem]:
    """MMAU-Pro: groups "instruction following", "closed" (every multiple-choice category) and "open"."""
    items = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        audio = _pick_audio(row)
        _require({**row, "audio_path": audio}, ("id", "audio_path", "question", "category"), at, "MMAU-Pro")
        category = str(row["category"]).strip()
        low = category.lower()
        kind, group = {"instruction following": ("instruction", low), "open": ("open", low)}.get(
            low, ("choice", "closed")
        )
        choices = _plain(row.get("choices"))
        item = EvalItem(
            id=str(row["id"]),
            benchmark="mmau-pro",
            group=group,
            kind=kind,
            audio=[_resolve_audio(a, audio_root) for a in _audio_list(audio, at)],
            question=str(row["question"]),
            choices=[str(c) for c in choices] if kind == "choice" and choices else None,
            answer=None if row.get("answer") is None else str(row["answer"]),
            meta={"category": category},
        )
        if kind == "instruction":
            item.meta["task_identifier"] = row.get("task_identifier")
            item.meta["kwargs"] = _kwargs(row.get("kwargs"), at)
        elif kind == "choice":
            _check_choice(item)
        elif item.answer is None:
            item.invalid = "open item without a reference answer"
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    """How a benchmark is loaded and reported: its table columns (``groups``) and extra breakdown fields."""

    name: str
    title: str
    groups: tuple[str, ...]
    breakdowns: tuple[str, ...]
    loader: Callable[[list[dict[str, Any]], str, str], list[EvalItem]]


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "mmau": BenchmarkSpec("mmau", "MMAU-Mini", _MODALITIES, ("difficulty", "sub-category"), load_mmau),
    "mmar": BenchmarkSpec("mmar", "MMAR", _MODALITIES, ("modality", "category"), load_mmar),
    "mmsu": BenchmarkSpec(
        "mmsu", "MMSU", ("perception", "reasoning"), ("sub-category", "task_name"), load_mmsu
    ),
    "mmau-pro": BenchmarkSpec(
        "mmau-pro", "MMAU-Pro", ("instruction following", "closed", "open"), ("category",), load_mmau_pro
    ),
}


def _unique_ids(items: list[EvalItem], where: str) -> None:
    seen: dict[str, int] = {}
    dupes = 0
    for item in items:
        n = seen.get(item.id, 0)
        seen[item.id] = n + 1
        if n:
            dupes += 1
            item.id = f"{item.id}#{n + 1}"
    if dupes:
        logger.warning("%s: %d duplicate ids were made unique with a '#n' suffix", where, dupes)


def load_benchmark(
    name: str,
    path: str,
    audio_root: str | None = None,
    *,
    limit: int | None = None,
    check_audio: bool = True,
) -> list[EvalItem]:
    """Load a benchmark file as :class:`EvalItem` s (see the module docstring for the formats).

    Args:
        name: "mmau", "mmar", "mmsu" or "mmau-pro".
        path: the benchmark's metadata file (.json, .jsonl, or .parquet).
        audio_root: folder the audio paths are relative to (default: the metadata file's folder).
        limit: keep the first ``limit`` items (quick runs).
        check_audio: raise ``FileNotFoundError`` when no audio file exists (a wrong ``audio_root``); when only some
            are missing, warn (those items become unscored "missing" predictions). False: no check (re-scoring).
    """
    key = name.strip().lower().replace("_", "-")
    if key not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {name!r}")
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(path))
    rows = read_records(path)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = rows[:limit]
    items = BENCHMARKS[key].loader(rows, root, os.path.basename(path))
    _unique_ids(items, path)
    invalid = [it for it in items if it.invalid]
    if invalid:
        logger.warning(
            "%s: %d of %d items cannot be scored and will be reported as unscored (first: %s: %s)",
            path,
            len(invalid),
            len(items),
            invalid[0].id,
            invalid[0].invalid,
        )
    if check_audio:
        missing = [a for it in items for a in it.audio if isinstance(a, str) and not os.path.exists(a)]
        total = sum(len(it.audio) for it in items)
        if missing and len(missing) == total:
            raise FileNotFoundError(
                f"{path}: none of the {total} audio file(s) exists under audio_root={root!r}, e.g. {missing[:3]}; "
                "pass --audio-root pointing at the folder the benchmark's audio paths are relative to"
            )
        if missing:
            logger.warning(
                "%s: %d of %d audio file(s) not found (e.g. %s); those items are reported as unscored",
                path,
                len(missing),
                total,
                missing[:3],
            )
    return items
