"""The audio attention probe: a_t of MAPO (paper §3.2, eq. 13-16) and the attention observations it is built on.

Modules, one job each (import the names from ``mapo.probe``):

* ``attention_hook``: the registered attention implementation ``"mapo_sdpa"`` (transformers' SDPA, bit-identical)
  and :func:`attention_observer`, the channel through which code observes its calls;
* ``capture``: :func:`audio_attention`, the differentiable audio mass a_t of one forward (indicator SDPA, no
  attention matrix), used by the trainer's attention loss and by the diagnostics;
* ``reductions``: :class:`ForwardRecord`, the head / layer reductions of the per-head masses into a_t;
* ``naive``: the materialised-softmax oracle the probe is tested against;
* ``key_attention``: :func:`audio_key_attention`, the per-audio-key attention map for evidence masking (no grad).

Layer: depends on :mod:`mapo.modality` (where the decoder lives) and transformers; never on TRL.
"""

from .attention_hook import (
    PROBE_IMPLEMENTATION,
    attention_observer,
    disable_probe_attention,
    enable_probe_attention,
    probe_attention_forward,
)
from .capture import (
    AudioAttentionCapture,
    audio_attention,
    default_target_layers,
    naive_audio_attention,
    resolve_target_layers,
)
from .key_attention import KeyAttentionCapture, audio_key_attention
from .naive import naive_head_mass
from .reductions import HEAD_REDUCE, LAYER_REDUCE, ForwardRecord

__all__ = [
    "HEAD_REDUCE",
    "LAYER_REDUCE",
    "PROBE_IMPLEMENTATION",
    "AudioAttentionCapture",
    "ForwardRecord",
    "KeyAttentionCapture",
    "attention_observer",
    "audio_attention",
    "audio_key_attention",
    "default_target_layers",
    "disable_probe_attention",
    "enable_probe_attention",
    "naive_audio_attention",
    "naive_head_mass",
    "probe_attention_forward",
    "resolve_target_layers",
]
