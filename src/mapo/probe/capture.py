"""The audio attention mass a_t of MAPO (paper §3.2, eq. 13-16) without building the attention matrix.

For one head, Σ_{j∈S_audio} softmax(q·K)_j = SDPA(q, K, V = 1[j ∈ S_audio]). The language model runs on the
attention implementation ``"mapo_sdpa"`` (:mod:`mapo.probe.attention_hook`), which returns transformers' own SDPA output
(bit-identical to ``"sdpa"``); in target layers only and only while a capture is active, the probe runs ONE extra
SDPA call on the selected query rows
whose values are the audio indicator, with keys expanded by ``repeat_kv`` for GQA. The indicator is padded to 8
value columns on CUDA (the memory-efficient kernel accepts a value head dim != E if it is a multiple of 8) and to
the head dim E elsewhere (the CPU flash kernel needs equal head dims; the math fallback would build the ``[T_q, S]``
weights). Cost per target layer: O(H·T_q·S) time, O(H·T_q·8) (CUDA) or O(H·T_q·E) (CPU) saved output, a copy of
the keys, and one additive ``[B, 1, T_q, S]`` mask shared by all target layers. The gradient of the mass flows into
Q and K of the target layers and everything upstream (eq. 14-16); nothing flows through V.

Usage::

    keys = audio_key_mask(input_ids, spec)                      # [B, L]
    with audio_attention(model, keys, query_mask=qmask) as cap:  # qmask: [B, L], completion rows
        out = model(input_ids=..., attention_mask=..., input_features=..., ...)
    a = cap.mass                                                 # [B, L] fp32, 0 where qmask is 0

Decisions:

* **Reductions**: max over heads (``head_reduce="mean"`` optional), then mean over target layers
  (``layer_reduce="max"`` optional), as in §3.2. Default target layers: the last five decoder layers.
* **Which forwards are captured**: forwards with as many keys as queries (scoring forwards, and the prefill of
  ``generate``). Forwards that reuse a KV cache (``generate``'s decode steps, L=1) are not captured: they run plain
  SDPA, so logits are unchanged, and are counted in ``cap.skipped_forwards``. To get the mass of generated tokens,
  re-score prompt + completion in one forward (attention is causal, so the numbers are the decode-time ones).
* **Several forwards in one capture**: each captured forward appends a :class:`ForwardRecord` to ``cap.records``;
  ``cap.mass``/``cap.per_head`` need exactly one captured forward and raise otherwise (use ``cap.records[i]``).
* **Checkpointing**: the per-forward state travels in the decoder layers' kwargs, so non-reentrant recomputation
  re-runs the probe identically (same saved tensors) even after the ``with`` block; it then needs the probe
  implementation to still be installed: call :func:`enable_probe_attention` once (a trainer does), or call
  ``backward`` inside the block. Reentrant checkpointing runs the forward under ``no_grad`` and loses the graph:
  it raises (detected from ``use_reentrant`` of the layers' ``_gradient_checkpointing_func`` and at run time).
* Only the language model's implementation is switched (``set_attn_implementation({"text_config": ...})`` on the
  model, or on ``model.thinker`` for a full Omni model); audio/vision encoders keep theirs.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.integrations.sdpa_attention import repeat_kv

from ..modality import DecoderHandle, ModalitySpec, resolve_decoder
from .attention_hook import (
    PROBE_IMPLEMENTATION,
    attention_observer,
    disable_probe_attention,
    enable_probe_attention,
    probe_attention_forward,
)
from .naive import naive_head_mass
from .reductions import HEAD_REDUCE, LAYER_REDUCE, ForwardRecord, check_choice

__all__ = [
    "PROBE_IMPLEMENTATION",
    "AudioAttentionCapture",
    "ForwardRecord",
    "audio_attention",
    "default_target_layers",
    "disable_probe_attention",
    "enable_probe_attention",
    "naive_audio_attention",
    "probe_attention_forward",
    "resolve_target_layers",
]

_CUDA_INDICATOR_COLUMNS = (
    8  # CUDA's memory-efficient SDPA accepts a value head dim != E if it is a multiple of 8
)
_REENTRANT_MESSAGE = (
    "the audio attention probe cannot run under reentrant gradient checkpointing: its first forward runs under "
    "no_grad, so the audio mass would have no graph. Use non-reentrant checkpointing "
    '(model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})), disable '
    "checkpointing, or capture under torch.no_grad() for diagnostics. (TRL forces reentrant checkpointing for "
    "PEFT + DeepSpeed ZeRO-3.)"
)


def default_target_layers(num_layers: int, count: int = 5) -> tuple[int, ...]:
    """The last ``count`` decoder layers (paper: layers 43-47 of Qwen3-Omni's 48), clipped to the model."""
    return tuple(range(max(0, num_layers - count), num_layers))


# ----------------------------------------------------------------------------------------------------------------
# Per-forward state (travels with the decoder layers' kwargs, so checkpoint recomputation sees it too)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Geometry:
    audio: torch.Tensor  # bool [B, S]
    columns: torch.Tensor  # long [T_q]
    span: slice | None  # the same columns as a slice when contiguous (no gather copy)
    indicator: torch.Tensor  # [B, H, S, 8 (CUDA) or E], column 0 = audio
    row_masks: dict = field(default_factory=dict)  # key of the 4-D mask -> its rows at `columns`


class _ForwardState:
    def __init__(self, capture: AudioAttentionCapture, grad_enabled: bool, checkpointing: bool):
        self.capture = capture
        self.grad_enabled = grad_enabled
        self.checkpointing = checkpointing
        self.record: ForwardRecord | None = None
        self.geometry: _Geometry | None = None
        self.skipped = False

    def observe(self, module, query, key, attention_mask, scaling) -> None:
        cap = self.capture
        layer = getattr(module, "layer_idx", None)
        if layer not in cap.target_layers or self.skipped:
            return
        b, h, q_len, e = query.shape
        if key.shape[2] != q_len:  # a forward that reuses a KV cache (generate's decode steps): not captured
            self.skipped = True
            cap.skipped_forwards += 1
            return
        if self.grad_enabled and not torch.is_grad_enabled():
            raise RuntimeError(_REENTRANT_MESSAGE)
        geo = self._geometry(query, key)
        scale = scaling if scaling is not None else e**-0.5
        if geo.columns.numel() == 0:
            mass = query.new_zeros((b, h, 0))
        elif cap.method == "naive":
            padding = None if cap.padding_mask is None else cap.padding_mask.to(query.device)
            mass = naive_head_mass(query, key, geo.audio, geo.columns, scale, padding)
        else:
            mass = _indicator_mass(
                query, key, self._row_mask(attention_mask, query.dtype, geo, q_len), geo, scale
            )
        if self.record is None:
            self.record = ForwardRecord(b, q_len, geo.columns, cap._query_on(geo.columns, query.device))
            cap.records.append(self.record)
        if layer in self.record.raw:
            return  # recomputation of a checkpointed layer: the tensors above only refill its saved activations
        self.record.raw[layer] = mass
        if self.checkpointing and mass.requires_grad:
            mass.register_hook(functools.partial(_guard_recomputation, weakref.ref(cap)))

    def _geometry(self, query: torch.Tensor, key: torch.Tensor) -> _Geometry:
        if self.geometry is not None:
            return self.geometry
        cap = self.capture
        b, h, q_len, _ = query.shape
        s = key.shape[2]
        if cap.audio_key_mask.shape[1] != s or cap.audio_key_mask.shape[0] != b:
            raise ValueError(
                f"audio_key_mask has shape {tuple(cap.audio_key_mask.shape)} but the forward has batch {b} and {s} "
                "key positions: build it from this forward's input_ids (prompt + completion)."
            )
        if cap.query_mask is not None and cap.query_mask.shape != (b, q_len):
            raise ValueError(
                f"query_mask has shape {tuple(cap.query_mask.shape)} but the forward has batch {b} and {q_len} "
                "query positions."
            )
        audio = cap.audio_key_mask.to(query.device)
        if cap.query_mask is None:
            columns = torch.arange(q_len, device=query.device)
        else:
            columns = cap.query_mask.to(query.device).any(dim=0).nonzero().flatten()
        span = None
        if columns.numel() and int(columns[-1] - columns[0]) + 1 == columns.numel():
            span = slice(int(columns[0]), int(columns[-1]) + 1)
        # Value head dim that keeps a fused kernel: 8 on CUDA (memory-efficient), E elsewhere (CPU flash).
        width = _CUDA_INDICATOR_COLUMNS if query.is_cuda else query.shape[-1]
        indicator = torch.zeros((b, 1, s, width), dtype=query.dtype, device=query.device)
        indicator[..., 0] = audio[:, None, :].to(query.dtype)
        indicator = indicator.expand(b, h, s, width)
        if query.is_cuda:  # fused CUDA kernels want real strides; this is only B*H*S*8 elements
            indicator = indicator.contiguous()
        self.geometry = _Geometry(audio, columns, span, indicator)
        return self.geometry

    def _row_mask(
        self, mask: torch.Tensor | None, dtype: torch.dtype, geo: _Geometry, q_len: int
    ) -> torch.Tensor:
        """The selected rows of the 4-D mask (or of the causal mask when transformers passed none), as one additive
        mask per forward: every target layer reuses (and saves for backward) the same tensor."""
        cache_key = None if mask is None else (mask.data_ptr(), tuple(mask.shape), mask.dtype)
        if cache_key in geo.row_masks:
            return geo.row_masks[cache_key]
        s = geo.audio.shape[1]
        key_pos = torch.arange(s, device=geo.audio.device)
        if (
            mask is None
        ):  # no padding: transformers relies on is_causal, whose upper-left alignment is wrong here
            rows = (key_pos[None, :] <= geo.columns[:, None] + (s - q_len))[None, None]
        else:
            rows = mask[:, :, geo.span] if geo.span is not None else mask.index_select(2, geo.columns)
        if rows.dtype == torch.bool:
            # Fully masked rows (left padding) see key 0 instead, so no backend returns NaN; they are zeroed later.
            rows = rows | (~rows.any(dim=-1, keepdim=True) & (key_pos == 0))
            # SDPA would convert a bool mask to an additive one in every layer; do it once. On CUDA allocate the key
            # dim padded to 16 and pass a view, the alignment the memory-efficient kernel would otherwise copy into.
            width = -(-s // 16) * 16 if rows.is_cuda else s
            additive = torch.full((*rows.shape[:-1], width), float("-inf"), dtype=dtype, device=rows.device)
            rows = additive[..., :s].masked_fill_(rows, 0.0)
        else:
            dead = torch.isneginf(rows).all(dim=-1, keepdim=True)
            rows = rows.masked_fill(dead & (key_pos == 0), 0.0).to(dtype)
        geo.row_masks[cache_key] = rows
        return rows


def _indicator_mass(
    query: torch.Tensor, key: torch.Tensor, row_mask: torch.Tensor, geo: _Geometry, scale: float
) -> torch.Tensor:
    """Per-head audio mass ``[B, H, T_q]`` with one SDPA call whose values are the audio indicator (§3.2)."""
    q = query[:, :, geo.span] if geo.span is not None else query.index_select(2, geo.columns)
    k = repeat_kv(key, query.shape[1] // key.shape[1])
    out = F.scaled_dot_product_attention(q, k, geo.indicator, attn_mask=row_mask, dropout_p=0.0, scale=scale)
    return out[..., 0]


def _guard_recomputation(capture_ref, grad: torch.Tensor) -> None:
    cap = capture_ref()
    if cap is not None and cap.closed and cap.handle.implementation != PROBE_IMPLEMENTATION:
        raise RuntimeError(
            "backward through an audio attention mass ran after its audio_attention() block restored the "
            f"{cap.handle.implementation!r} attention implementation, but the checkpointed layers must recompute "
            "the probe. Call mapo.probe.enable_probe_attention(model) once before training (the probe is plain "
            "SDPA outside a capture), or call backward inside the with block."
        )


# ----------------------------------------------------------------------------------------------------------------
# Capture
# ----------------------------------------------------------------------------------------------------------------

_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _uses_reentrant(layer: nn.Module) -> bool | None:
    """``use_reentrant`` of a layer's checkpoint function (transformers 5.23 stores a ``functools.partial``)."""
    fn = getattr(layer, "_gradient_checkpointing_func", None)
    if isinstance(fn, functools.partial):
        flag = fn.keywords.get("use_reentrant")
        return True if flag is None else bool(flag)  # torch 2.13 defaults to reentrant when it is not passed
    if fn is torch.utils.checkpoint.checkpoint:
        return True
    return None  # unknown function: the run-time check in _ForwardState.observe decides


class AudioAttentionCapture:
    """State of one :func:`audio_attention` block; read ``mass`` (and ``per_head``) after the forward."""

    def __init__(
        self,
        handle: DecoderHandle,
        audio_key_mask: torch.Tensor,
        query_mask: torch.Tensor | None,
        target_layers: tuple[int, ...],
        head_reduce: str,
        layer_reduce: str,
        keep_heads: bool,
        method: str,
        padding_mask: torch.Tensor | None,
    ):
        self.handle = handle
        self.audio_key_mask = audio_key_mask
        self.query_mask = query_mask
        self.target_layers = target_layers
        self.head_reduce = head_reduce
        self.layer_reduce = layer_reduce
        self.keep_heads = keep_heads
        self.method = method
        self.padding_mask = padding_mask
        self.records: list[ForwardRecord] = []
        self.skipped_forwards = 0
        self.closed = False

    def _query_on(self, columns: torch.Tensor, device: torch.device) -> torch.Tensor:
        b = self.audio_key_mask.shape[0]
        if self.query_mask is None:
            return torch.ones((b, columns.numel()), dtype=torch.bool, device=device)
        return self.query_mask.to(device).index_select(1, columns)

    def _new_forward_state(self) -> _ForwardState | None:
        if self.closed:
            return None
        module = self.handle.language_model
        grad = torch.is_grad_enabled()
        checkpointing = module.training and any(
            getattr(m, "gradient_checkpointing", False) for m in module.layers
        )
        if checkpointing and grad:
            for layer in module.layers:
                if getattr(layer, "gradient_checkpointing", False) and _uses_reentrant(layer):
                    raise RuntimeError(_REENTRANT_MESSAGE)
        return _ForwardState(self, grad, checkpointing and grad)

    def _single(self) -> ForwardRecord:
        if len(self.records) != 1:
            raise ValueError(
                f"{len(self.records)} forwards were captured in this audio_attention() block "
                f"({self.skipped_forwards} more reused a KV cache and were skipped); .mass and .per_head need "
                "exactly one. Use cap.records[i].reduce() / .per_head() for several forwards."
            )
        record = self.records[0]
        if set(record.raw) != set(self.target_layers):
            raise RuntimeError(
                f"the forward recorded layers {sorted(record.raw)} but the target layers are "
                f"{list(self.target_layers)}: some target layers did not run the probe implementation"
            )
        return record

    @property
    def mass(self) -> torch.Tensor:
        """a_t of §3.2 for every position of the captured forward: fp32 ``[B, L]``, 0 where ``query_mask`` is 0."""
        return self._single().reduce(self.head_reduce, self.layer_reduce)

    def reduced(self, head_reduce: str | None = None, layer_reduce: str | None = None) -> torch.Tensor:
        """The mass with other reductions (e.g. max-head and mean-head trajectories from one forward)."""
        return self._single().reduce(head_reduce or self.head_reduce, layer_reduce or self.layer_reduce)

    @property
    def per_head(self) -> dict[int, torch.Tensor]:
        """Layer -> per-head mass fp32 ``[B, H, L]``; needs ``keep_heads=True``."""
        if not self.keep_heads:
            raise ValueError("per-head masses were not requested: pass keep_heads=True to audio_attention()")
        return self._single().per_head()


def _as_bool_mask(name: str, mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [B, L] tensor, got {getattr(mask, 'shape', type(mask))}")
    return mask.bool()


def resolve_target_layers(target_layers: Sequence[int] | None, num_layers: int) -> tuple[int, ...]:
    """L_tgt as sorted distinct 0-based decoder layer indices; ``None`` = :func:`default_target_layers`.

    A repeated index would count its layer twice in the layer mean (a_t of ``[1, 1]`` is not a_t of ``[1]``), an
    out-of-range one would never be observed: both are refused with the model's depth in the message.
    """
    if target_layers is None:
        return default_target_layers(num_layers)
    layers = tuple(int(i) for i in target_layers)
    bad = [i for i in layers if not 0 <= i < num_layers]
    if not layers or bad or len(set(layers)) != len(layers):
        raise ValueError(
            f"target_layers must be distinct layer indices in [0, {num_layers}) (the language model has "
            f"{num_layers} decoder layers), got {list(target_layers)}"
        )
    return tuple(sorted(layers))


@contextlib.contextmanager
def audio_attention(
    model: nn.Module,
    audio_key_mask: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    target_layers: Sequence[int] | None = None,
    head_reduce: str = "max",
    layer_reduce: str = "mean",
    *,
    keep_heads: bool = False,
    method: str = "probe",
    padding_mask: torch.Tensor | None = None,
    spec: ModalitySpec | None = None,
) -> Iterator[AudioAttentionCapture]:
    """Capture the audio attention mass of the forward run inside the block (paper §3.2; gradient eq. 13-16).

    Args:
        model: Qwen2-Audio, an Omni thinker, a full Omni model or a ``*ForCausalLM`` (PEFT-wrapped or not).
        audio_key_mask: bool ``[B, L]`` audio keys S_audio of that forward (see :func:`mapo.modality.audio_key_mask`).
        query_mask: bool ``[B, L]`` query rows to evaluate (e.g. completion rows P-1+t); ``None`` = all rows. Only
            the columns selected in some row are computed.
        target_layers: decoder layer indices; default the last five.
        head_reduce: ``"max"`` (paper) or ``"mean"``; layer_reduce: ``"mean"`` (paper) or ``"max"``.
        keep_heads: expose ``cap.per_head`` (layer -> ``[B, H, L]``) for diagnostics.
        method: ``"probe"`` (indicator SDPA) or ``"naive"`` (materialised fp32 softmax; tests/diagnostics).
        padding_mask: ``[B, L]`` 0/1 key padding mask, used only by the naive method (its own mask).
        spec: the family's :class:`~mapo.modality.ModalitySpec`, which says where the decoder is; default: the
            built-in spec of the model's family, or discovery for other models (:func:`mapo.modality.resolve_decoder`).

    The language model is switched to the probe implementation if it is not on it already and switched back on
    exit (also on error). Rows selected by ``query_mask`` must have at least one audio key.
    """
    check_choice("head_reduce", head_reduce, HEAD_REDUCE)
    check_choice("layer_reduce", layer_reduce, LAYER_REDUCE)
    check_choice("method", method, ("probe", "naive"))
    keys = _as_bool_mask("audio_key_mask", audio_key_mask)
    queries = None if query_mask is None else _as_bool_mask("query_mask", query_mask)
    if queries is not None and queries.shape != keys.shape:
        raise ValueError(
            f"query_mask {tuple(queries.shape)} and audio_key_mask {tuple(keys.shape)} differ in shape"
        )
    queried = torch.ones(keys.shape[0], dtype=torch.bool) if queries is None else queries.any(dim=1).cpu()
    empty = (~keys.any(dim=1).cpu() & queried).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty} of audio_key_mask have no audio key but are queried: their mass would be identically 0. "
            "Fix the prompt, or set query_mask to 0 on those rows."
        )
    handle = resolve_decoder(model, spec)
    if handle.language_model in _ACTIVE:
        raise RuntimeError("audio_attention() blocks cannot be nested on the same model")
    capture = AudioAttentionCapture(
        handle,
        keys,
        queries,
        resolve_target_layers(target_layers, handle.num_layers),
        head_reduce,
        layer_reduce,
        keep_heads,
        method,
        padding_mask,
    )
    _ACTIVE[handle.language_model] = capture
    try:
        with attention_observer(handle, capture._new_forward_state):
            yield capture
    finally:
        capture.closed = True
        _ACTIVE.pop(handle.language_model, None)


def naive_audio_attention(
    model: nn.Module,
    audio_key_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
    target_layers: Sequence[int] | None = None,
    head_reduce: str = "max",
    layer_reduce: str = "mean",
    *,
    keep_heads: bool = False,
    spec: ModalitySpec | None = None,
):
    """:func:`audio_attention` with the naive method: materialised fp32 softmax of the same q/k, masked with its
    own causal + ``attention_mask`` (2-D padding) mask. The reference the probe is tested against."""
    return audio_attention(
        model,
        audio_key_mask,
        query_mask,
        target_layers,
        head_reduce,
        layer_reduce,
        keep_heads=keep_heads,
        method="naive",
        padding_mask=attention_mask,
        spec=spec,
    )
