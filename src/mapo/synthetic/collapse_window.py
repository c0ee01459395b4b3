"""Where the warm-up's SFT stops: the last checkpoint inside the *collapse window*.

Full SFT on audio + chain first teaches the tiny model to read the notes the prior cannot predict (the early
notes), and only later the late ones (``docs/synthetic.md``, rows E8–E10). Late-stage modality collapse — reads
the early notes from the audio, writes the late ones from the prior (MAPO §3.2) — is the stretch in between, and
where it lies differs from seed to seed: a fixed number of SFT steps left some seeds half cured (their base models
wrote only 34–47 % of the late trap notes from the prior). So the warm-up evaluates a held-out validation split
every ``check_every`` SFT steps and keeps the **last checkpoint at which the model reads the early notes of trap
items (early-note accuracy ≥ ``early_min``) and still writes their late notes from the prior (share of late notes
continuing the written pattern ≥ ``follow_min``)**; once the window has opened and closed again, SFT stops.

The validation split (``task.make_split(..., "val", ...)``) has its own random stream: it never overlaps the
training, RL or evaluation splits and is never trained on; it only decides where to stop, the way a held-out set
decides early stopping. Half of it is trap items, which the warm-up otherwise never sees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .evaluate import evaluate

__all__ = ["CollapseWindow", "WindowCheck"]


@dataclass(frozen=True)
class WindowCheck:
    """One evaluation of the validation split during SFT (greedy; trap figures unless named ``prior_``)."""

    step: int
    early_note_acc: float | None  #: notes 1…K-2 of trap items right
    late_follow_prior: float | None  #: share of trap late notes equal to the previous written note + step
    attn_ratio: float | None  #: late / early audio mass on trap note tokens
    answer_acc: float | None  #: trap answer accuracy
    prior_answer_acc: float | None  #: answer accuracy on the validation split's training-distribution items
    inside: bool  #: inside the collapse window

    # a figure is None where evaluate() gives NaN (no well-formed chain to measure), so the report stays valid JSON

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CollapseWindow:
    """Evaluates ``rows`` on demand, remembers the last checkpoint inside the window and restores it.

    Args:
        model, processor: the model being warmed up (weights are snapshotted in memory: ~1 MB here).
        rows: validation rows, trap and training-distribution items mixed (``row["trap"]``).
        early_min: minimum trap early-note accuracy (the model reads the audio where the prior cannot help).
        follow_min: minimum share of trap late notes that follow the prior (the model has not learnt to read them).
    """

    def __init__(self, model, processor, rows: list[dict[str, Any]], early_min: float, follow_min: float):
        if not any(r["trap"] for r in rows) or all(r["trap"] for r in rows):
            raise ValueError(
                "collapse window: the validation rows need both trap and training-distribution items"
            )
        self.model, self.processor = model, processor
        # evaluate() reports per row["split"]: label the two halves so their figures come out separately
        self.rows = [dict(r, split="trap" if r["trap"] else "prior") for r in rows]
        self.early_min, self.follow_min = early_min, follow_min
        self.checks: list[WindowCheck] = []
        self._kept: dict[str, torch.Tensor] | None = None

    @property
    def kept_step(self) -> int | None:
        """SFT step of the checkpoint kept (``None`` while no checkpoint has been inside the window)."""
        inside = [c.step for c in self.checks if c.inside]
        return inside[-1] if inside else None

    def check(self, step: int) -> bool:
        """Evaluate after SFT step ``step``; keep the weights if inside the window. Returns True when SFT should stop
        (the window has opened and this checkpoint is outside it again)."""
        m = evaluate(self.model, self.processor, self.rows)
        early, follow = m["trap/early_note_acc"], m["trap/late_follow_prior"]
        inside = early >= self.early_min and follow >= self.follow_min  # False when either is NaN
        opened = self.kept_step is not None
        self.checks.append(
            WindowCheck(
                step=step,
                early_note_acc=_figure(early),
                late_follow_prior=_figure(follow),
                attn_ratio=_figure(m["trap/attn_ratio"]),
                answer_acc=_figure(m["trap/answer_acc"]),
                prior_answer_acc=_figure(m["prior/answer_acc"]),
                inside=inside,
            )
        )
        if inside:
            self._kept = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return opened and not inside

    def restore(self) -> int | None:
        """Load the kept checkpoint into the model (no-op when none was inside); returns its step."""
        if self._kept is not None:
            self.model.load_state_dict(self._kept)
        return self.kept_step


def _figure(x: float) -> float | None:
    return None if math.isnan(float(x)) else round(float(x), 4)
