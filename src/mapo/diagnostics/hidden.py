"""Hidden states of the language model for prompts, shared by the linear probes and the modality gap.

Layer indices follow transformers' ``hidden_states`` tuple: 0 is the input embeddings (audio features already
merged in at the placeholder positions), i ≥ 1 the output of decoder layer i (the last one after the final norm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["check_layers", "prompt_hidden_states"]


def check_layers(layers: Sequence[int], n_states: int) -> list[int]:
    """Validate hidden-state indices (negative ones count from the end)."""
    out = [int(i) + n_states if int(i) < 0 else int(i) for i in layers]
    bad = [layers[k] for k, i in enumerate(out) if not 0 <= i < n_states]
    if not out or bad:
        raise ValueError(
            f"layers must be hidden-state indices in [-{n_states}, {n_states}) (0 = embeddings, i = output of "
            f"decoder layer i), got {list(layers)}"
        )
    return out


@torch.no_grad()
def prompt_hidden_states(
    model: Any, inputs: dict[str, torch.Tensor], layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """``{layer: hidden [B, L, D] fp32}`` of one forward over ``inputs`` (processor outputs, audio included)."""
    out = model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    states = out.hidden_states
    if states is None:
        raise RuntimeError(f"{type(model).__name__} returned no hidden_states for output_hidden_states=True")
    if states[0].shape[1] != inputs["input_ids"].shape[1]:
        raise RuntimeError(
            "hidden states and input_ids differ in length; expand the audio placeholders in the processor"
        )
    return {i: states[i].float() for i in check_layers(layers, len(states))}
