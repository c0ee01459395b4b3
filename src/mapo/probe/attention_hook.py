"""The attention implementation ``"mapo_sdpa"`` and the channel that lets code observe its calls.

``"mapo_sdpa"`` is transformers' own SDPA attention (bit-identical outputs) registered through
``AttentionInterface`` with its mask function. When the decoder layers' kwargs carry an observer (put there by
:func:`attention_observer` before a forward of the language model), every attention call hands it
``(module, query, key, attention_mask, scaling)`` after the SDPA call. Because the observer travels in the layers'
kwargs, a non-reentrant checkpoint recomputation sees the same observer as the first forward. The audio attention
probe (:mod:`mapo.probe`) and the diagnostics' per-key attention
(:mod:`mapo.probe.key_attention`) are two observers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..modality import DecoderHandle, ModalitySpec, resolve_decoder

__all__ = [
    "PROBE_IMPLEMENTATION",
    "attention_observer",
    "disable_probe_attention",
    "enable_probe_attention",
    "probe_attention_forward",
]

PROBE_IMPLEMENTATION = "mapo_sdpa"
_OBSERVER_KWARG = "mapo_probe_state"


def probe_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention; then the observer in the layer kwargs, if any, sees the call.

    ``attention_mask`` is a keyword with a default because some encoders call implementations that way.
    """
    observer = kwargs.pop(_OBSERVER_KWARG, None)
    output = sdpa_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=dropout,
        scaling=scaling,
        is_causal=is_causal,
        **kwargs,
    )
    if observer is not None:
        observer.observe(module, query, key, attention_mask, scaling)
    return output


AttentionInterface.register(PROBE_IMPLEMENTATION, probe_attention_forward)
# Without a registered mask function transformers hands the implementation attention_mask=None (padding and
# causality silently lost); SDPA's boolean mask is exactly what the delegated call expects.
AttentionMaskInterface.register(PROBE_IMPLEMENTATION, sdpa_mask)


def enable_probe_attention(model: nn.Module, spec: ModalitySpec | None = None) -> str:
    """Switch the language model of ``model`` to the probe implementation for good; returns the previous one.

    Outside a capture the probe is plain SDPA. Trainers call this once so that backward passes that recompute
    checkpointed layers after a capture block still find the probe. ``spec`` says where the decoder is (default:
    the built-in fact sheet of the model's family, :func:`mapo.modality.resolve_decoder`).
    """
    handle = resolve_decoder(model, spec)
    previous = handle.implementation
    if previous != PROBE_IMPLEMENTATION:
        handle.set_implementation(PROBE_IMPLEMENTATION)
    return previous


def disable_probe_attention(
    model: nn.Module, implementation: str = "sdpa", spec: ModalitySpec | None = None
) -> None:
    """Switch the language model of ``model`` back to ``implementation``."""
    resolve_decoder(model, spec).set_implementation(implementation)


@contextlib.contextmanager
def attention_observer(handle: DecoderHandle, new_observer: Callable[[], object | None]) -> Iterator[None]:
    """Run the language model of ``handle`` on the probe implementation with an observer in its attention calls.

    Before each forward of the language model ``new_observer()`` gives the observer of that forward (``None``: not
    observed); it travels in the decoder layers' kwargs (so checkpoint recomputation sees the same one) and its
    ``observe(module, query, key, attention_mask, scaling)`` runs after every SDPA call. The implementation is
    switched back on exit. :func:`mapo.probe.audio_attention` and the diagnostics' per-key attention are built
    on it.
    """

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict):
        if _OBSERVER_KWARG in kwargs:
            return None
        observer = new_observer()
        return None if observer is None else (args, {**kwargs, _OBSERVER_KWARG: observer})

    previous = handle.implementation
    hook = handle.language_model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        if previous != PROBE_IMPLEMENTATION:
            handle.set_implementation(PROBE_IMPLEMENTATION)
        yield
    finally:
        hook.remove()
        if handle.implementation != previous:
            handle.set_implementation(previous)
