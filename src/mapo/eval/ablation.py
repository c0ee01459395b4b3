"""``mapo eval --ablate-audio silence|noise|drop``: how much a model answers without listening.

The same items are generated a second time with the audio replaced (AudioMCQ, arXiv 2509.21060, reports audio
LLMs near 50 % on MMAU test-mini with silence). Per benchmark and category the report gives the accuracy with the
audio, the accuracy without it (the share of items answered correctly without the audio), and the share of the
items answered correctly *with* the audio that stay correct without it (answers the audio was not needed for).

* ``silence``: each clip becomes zeros of the same length (the processor computes the features of silence);
* ``noise``: Gaussian noise with the clip's RMS, seeded per item (same noise on every run);
* ``drop``: no audio part at all: a text-only prompt.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mapo.eval.items import EvalItem, Prediction

__all__ = ["ABLATIONS", "ablate_clips", "ablation_report"]

ABLATIONS: tuple[str, ...] = ("silence", "noise", "drop")


def ablate_clips(mode: str, seed: int = 0) -> Callable[[EvalItem, list[np.ndarray]], list[np.ndarray]]:
    """``transform_clips(item, clips) -> clips`` for :func:`mapo.eval.runner.generate_predictions`."""
    if mode not in ABLATIONS:
        raise ValueError(f"--ablate-audio must be one of {ABLATIONS}, got {mode!r}")

    def transform(item: EvalItem, clips: list[np.ndarray]) -> list[np.ndarray]:
        if mode == "drop":
            return []
        if mode == "silence":
            return [np.zeros_like(c) for c in clips]
        rng = np.random.default_rng([seed, zlib.crc32(f"{item.benchmark}/{item.id}".encode())])
        return [
            (rng.standard_normal(c.shape) * float(np.sqrt(np.mean(np.square(c))))).astype(np.float32)
            for c in clips
        ]

    return transform


def _cell(pairs: Sequence[tuple[Prediction, Prediction]]) -> dict[str, Any]:
    n = len(pairs)
    with_audio = sum(1 for a, _ in pairs if a.score == 1.0)
    without = sum(1 for _, b in pairs if b.score == 1.0)
    kept = sum(1 for a, b in pairs if a.score == 1.0 and b.score == 1.0)
    return {
        "n": n,
        "accuracy_with_audio": with_audio / n if n else None,
        "accuracy_without_audio": without / n if n else None,
        "correct_without_audio_share": without / n if n else None,
        "still_correct_without_audio": kept / with_audio if with_audio else None,
    }


def ablation_report(with_audio: Sequence[Prediction], without: Sequence[Prediction]) -> dict[str, Any]:
    """Per benchmark: ``overall`` and per-category cells over the binary items scored in both runs."""
    other = {(p.benchmark, p.id): p for p in without}
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for a in with_audio:
        b = other.get((a.benchmark, a.id))
        if b is None or a.kind == "open" or a.score is None or b.score is None:
            continue
        groups[a.benchmark]["overall"].append((a, b))
        groups[a.benchmark][a.category or "(overall only)"].append((a, b))
    return {bench: {cat: _cell(pairs) for cat, pairs in cats.items()} for bench, cats in groups.items()}


def print_ablation(report: dict[str, Any], mode: str, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for bench, cats in report.items():
        table = Table(title=f"{bench}: audio reliance (--ablate-audio {mode}), accuracy %")
        for col in ("category", "items", "with audio", "without audio", "still correct without"):
            table.add_column(col, justify="right")
        for cat, cell in cats.items():
            pct = [
                "-" if cell[k] is None else f"{100 * cell[k]:.1f}"
                for k in ("accuracy_with_audio", "accuracy_without_audio", "still_correct_without_audio")
            ]
            table.add_row(cat, str(cell["n"]), *pct, style="bold" if cat == "overall" else None)
        console.print(table)
