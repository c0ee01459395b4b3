"""Where an eval run keeps its work: predictions appended per batch, a run record, resume and overwrite rules.

An output folder holds ``predictions.jsonl`` (one :class:`~mapo.eval.items.Prediction` per line, appended and
flushed after every batch, so an interrupted run loses at most the batch in flight) and ``run.json`` (what
produced them: model, adapter, benchmarks and their files, the audio ablation). A rerun into the same folder:

* with the same ``run.json`` and ``resume=True`` (the default): keeps the finished predictions and generates only
  the missing items (matched on ``(benchmark, id)``); a last line cut by a kill is dropped and redone;
* with a different ``run.json``: refused, with a message saying what differs, unless ``overwrite=True``;
* with ``resume=False``: refused unless ``overwrite=True`` (existing predictions are never replaced silently).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from mapo.eval.items import Prediction

__all__ = ["OutputExists", "PredictionStore", "write_json"]

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
RUN = "run.json"


class OutputExists(ValueError):
    """The output folder holds results that this run would replace."""


def _finite(value: Any) -> Any:
    """NaN / inf -> None, recursively: JSON has no NaN, and a bare ``NaN`` makes the file unreadable."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(obj: Any, path: str, **kwargs: Any) -> None:
    """Write always-valid JSON (NaN/inf become ``null``) atomically: a kill never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_finite(obj), fh, allow_nan=False, ensure_ascii=False, **kwargs)
    os.replace(tmp, path)


class PredictionStore:
    """The predictions file of one output folder (module docstring)."""

    def __init__(self, output_dir: str, run: dict[str, Any], *, resume: bool = True, overwrite: bool = False):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, PREDICTIONS)
        self.run_path = os.path.join(output_dir, RUN)
        self.run = run
        self.finished: dict[tuple[str, str], Prediction] = {}
        os.makedirs(output_dir, exist_ok=True)
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        if exists and not overwrite:
            if not resume:
                raise OutputExists(
                    f"{self.path} already holds predictions; pass --overwrite to replace them, or drop --no-resume "
                    "to continue that run"
                )
            previous = self._previous_run()
            if previous != run:
                diff = sorted(k for k in set(previous) | set(run) if previous.get(k) != run.get(k))
                raise OutputExists(
                    f"{self.path} holds predictions of another run (differs in {diff}: "
                    f"{ {k: previous.get(k) for k in diff} } here vs { {k: run.get(k) for k in diff} } now); "
                    "choose another --output-dir, or pass --overwrite to replace them"
                )
            self._load()
        elif exists:
            logger.warning("--overwrite: replacing %s", self.path)
            os.remove(self.path)
        write_json(run, self.run_path, indent=2)

    def _previous_run(self) -> dict[str, Any]:
        if not os.path.exists(self.run_path):
            return {"note": f"no {RUN} beside the predictions"}
        with open(self.run_path, encoding="utf-8") as fh:
            return json.load(fh)

    def _load(self) -> None:
        good: list[str] = []
        with open(self.path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                pred = Prediction.from_json(json.loads(line), f"{self.path}:{lineno}")
            except (json.JSONDecodeError, ValueError, TypeError):
                if lineno == len(lines):  # cut by a kill while writing: redo that item
                    logger.warning(
                        "%s:%d: incomplete last line dropped; its item is generated again", self.path, lineno
                    )
                    continue
                raise
            self.finished[(pred.benchmark, pred.id)] = pred
            good.append(line)
        if len(good) != len([x for x in lines if x.strip()]):
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write("".join(g + "\n" for g in good))
        logger.info("resuming: %d finished predictions in %s are kept", len(self.finished), self.path)

    def is_done(self, benchmark: str, item_id: str) -> bool:
        return (benchmark, item_id) in self.finished

    def append(self, predictions: Iterable[Prediction]) -> None:
        """Append and flush to disk (one batch)."""
        with open(self.path, "a", encoding="utf-8") as fh:
            for pred in predictions:
                fh.write(json.dumps(_finite(pred.to_json()), ensure_ascii=False, allow_nan=False) + "\n")
                self.finished[(pred.benchmark, pred.id)] = pred
            fh.flush()
            os.fsync(fh.fileno())
