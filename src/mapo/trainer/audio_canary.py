"""The audio canary: does the audio reach the decoder at all?

"Training runs but the audio never reaches the model" is among the most reported failures of audio RL: the wrong
processor, features dropped on the way to the forward (TRL 1.16's own scoring forwards drop them), a chat template
without audio placeholders. Nothing crashes; the model trains on its language prior.

At the first training generation batch, :class:`AudioCanary` scores a few completions twice through the trainer's
own scoring path (``_get_per_token_logps_and_entropies``, the one the loss uses): once with the batch's real
audio features and once with the features of silence (the same clips replaced by zeros of the same length, run
through the same processor call, so the placeholder count is identical). It logs

    audio/influence = mean over completion tokens of |log π(y_t | audio) − log π(y_t | silence)|

and stops training with :class:`AudioNotReachingModelError` when it is at or below ``audio_canary_min_influence``
(default 1e-6: an exactly unchanged log-prob means the features never entered the computation). Cost: two no-grad
forwards over ``audio_canary_rows`` completions, once per run.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


class AudioNotReachingModelError(RuntimeError):
    """The audio canary measured no influence of the audio on the completions' log-probs."""


def _silenced(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of a conversational prompt with every audio part replaced by zeros of the same length."""
    prompt = copy.copy(prompt)
    out = []
    for message in prompt:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "audio":
                    part = dict(part, audio=np.zeros_like(np.asarray(part["audio"], dtype=np.float32)))
                parts.append(part)
            message = dict(message, content=parts)
        out.append(message)
    return out


def canary_rows(n: int, group: int, k: int) -> list[int]:
    """Up to ``k`` row indices out of ``n``, one per prompt group first (rows ``0, G, 2G, ...``), then the rest."""
    first = list(range(0, n, max(group, 1)))
    rest = [i for i in range(n) if i not in set(first)]
    return (first + rest)[:k]


class AudioCanary:
    """Run once at the first training generation batch (see module docstring)."""

    def __init__(self, rows: int = 4, min_influence: float = 1e-6):
        self.rows = int(rows)
        self.min_influence = float(min_influence)
        self.influence: float | None = None

    @classmethod
    def from_args(cls, args) -> AudioCanary | None:
        """From ``MAPOConfig``'s ``audio_canary*`` fields; on with the defaults for a plain ``GRPOConfig``."""
        if not getattr(args, "audio_canary", True):
            return None
        return cls(getattr(args, "audio_canary_rows", 4), getattr(args, "audio_canary_min_influence", 1e-6))

    def __call__(self, trainer, inputs: list[dict[str, Any]], output: dict[str, Any], audio_keys) -> None:
        if self.influence is not None or not trainer.model.training:
            return
        self.influence = self.measure(trainer, inputs, output, audio_keys)
        trainer._metrics["train"]["audio/influence"].append(self.influence)
        if self.influence <= self.min_influence:
            raise AudioNotReachingModelError(
                f"audio canary: audio/influence = {self.influence:.3g} (mean |Δ log-prob| of the completions between "
                "the real audio and silence), so the audio never reaches the decoder and training would optimise "
                "the language prior alone. Check that processing_class is the model's own processor (it must emit "
                "the audio features and the audio placeholder tokens), that no trainer override drops the audio "
                "features before the forward, and that the audio encoder/projector weights are loaded. Set "
                "audio_canary: false to train anyway."
            )
        logger.info("audio canary: audio/influence = %.4g (the audio reaches the decoder)", self.influence)

    def measure(self, trainer, inputs: list[dict[str, Any]], output: dict[str, Any], audio_keys) -> float:
        """Mean |log π(y_t|audio) − log π(y_t|silence)| over the completion tokens of a few rows (all processes)."""
        from trl import GRPOTrainer

        n = output["completion_ids"].size(0)
        idx = canary_rows(n, trainer.num_generations, self.rows)
        device = output["completion_ids"].device
        # The silence features come from TRL's own processor call (not the audio-keeping override).
        _, _, fields = GRPOTrainer._tokenize_prompts(trainer, [_silenced(inputs[i]["prompt"]) for i in idx])
        silent = {
            k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(device)
            for k, v in fields.items()
            if k in audio_keys
        }
        real = {k: output[k][idx].to(device) for k in audio_keys if k in output}
        if set(silent) != set(real):
            raise RuntimeError(
                f"audio canary: silence produced features {sorted(silent)}, the batch {sorted(real)}"
            )
        rows = torch.tensor(idx, device=device)
        ids = torch.cat([output["prompt_ids"][rows], output["completion_ids"][rows]], dim=1)
        mask = torch.cat([output["prompt_mask"][rows], output["completion_mask"][rows]], dim=1)
        keep = output["completion_ids"].size(1)
        completion_mask = output["completion_mask"][rows].float()
        logps = []
        with torch.no_grad():
            for audio in (real, silent):
                with trainer.audio_visible(audio):
                    lp, _, _ = trainer._get_per_token_logps_and_entropies(
                        trainer.model, ids, mask, keep, batch_size=len(idx)
                    )
                logps.append(lp.float())
        delta = (logps[0] - logps[1]).abs() * completion_mask
        stats = torch.stack([delta.sum(), completion_mask.sum()])
        total, count = trainer.accelerator.reduce(stats, reduction="sum").tolist()
        return total / max(count, 1.0)
