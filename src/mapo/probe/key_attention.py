"""Per-audio-key attention of the completion's query rows: the token-to-audio attention map of appendix C.4.

The probe (:mod:`mapo.probe`) gives the audio *mass* a_t = Σ_{j∈S_audio} α_{t,j}; evidence masking needs the
individual α_{t,j} for every audio key j. Inside an :func:`audio_key_attention` block the language model runs
on ``"mapo_sdpa"`` (transformers' SDPA output, unchanged) with a :class:`KeyAttentionCapture` as the observer of
its attention calls (:func:`mapo.probe.attention_observer`); in target layers only it computes the explicit fp32 softmax of the selected
query rows in chunks of ``chunk_size`` rows and keeps only the audio columns. Peak memory per chunk is
O(H·chunk·S); what is kept is O(T·S_audio) per sequence (heads reduced at once, layers averaged). For diagnostics
under ``torch.no_grad()``, never for training.

Reductions: ``head_reduce`` ("mean", default: the attention map of the average head; or "max") over heads, then
the mean over target layers (§3.2's layer reduction). With ``head_reduce="mean"`` the sum over audio keys equals
the probe's mean-head mass exactly (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.integrations.sdpa_attention import repeat_kv

from ..modality import ModalitySpec, resolve_decoder
from .attention_hook import attention_observer
from .capture import resolve_target_layers

__all__ = ["KeyAttentionCapture", "audio_key_attention"]


@dataclass
class KeyAttentionCapture:
    """State and result of one :func:`audio_key_attention` block.

    After the forward: ``attention`` is fp32 ``[B, L, A]``: row i, column a = attention of query position i to the
    a-th audio key of its sequence (``audio_index[b, a]`` is that key's position, ``audio_valid[b, a]`` marks real
    entries; rows outside the query mask are 0).
    """

    audio_key_mask: torch.Tensor  # bool [B, L]
    padding_mask: torch.Tensor | None  # [B, L]
    query_mask: torch.Tensor  # bool [B, L]
    target_layers: tuple[int, ...]
    head_reduce: str
    chunk_size: int
    audio_index: torch.Tensor = field(init=False)  # long [B, A]
    audio_valid: torch.Tensor = field(init=False)  # bool [B, A]
    _sum: torch.Tensor | None = field(default=None, init=False)
    _layers_seen: set = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        counts = self.audio_key_mask.sum(dim=1)
        width = max(int(counts.max()), 1)
        order = torch.argsort(
            (~self.audio_key_mask).int(), dim=1, stable=True
        )  # audio positions first, in order
        self.audio_index = order[:, :width]
        self.audio_valid = torch.arange(width)[None, :].to(counts.device) < counts[:, None]

    def observe(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None,
    ) -> None:
        """Observer of one attention call (:func:`mapo.probe.attention_observer`); masks with its own
        causal + ``padding_mask``, so ``attention_mask`` is not read."""
        layer = getattr(module, "layer_idx", None)
        b, h, length, _ = query.shape
        if layer not in self.target_layers or key.shape[2] != length or layer in self._layers_seen:
            return
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        self._layers_seen.add(module.layer_idx)
        device = query.device
        k = repeat_kv(key, h // key.shape[1]).float()
        rows = self.query_mask.to(device).any(dim=0).nonzero().flatten()
        key_pos = torch.arange(length, device=device)
        index = self.audio_index.to(device)
        out = torch.zeros((b, length, index.shape[1]), dtype=torch.float32, device=device)
        for start in range(0, rows.numel(), self.chunk_size):
            cols = rows[start : start + self.chunk_size]
            scores = (
                torch.matmul(query.index_select(2, cols).float(), k.transpose(-1, -2)) * scale
            )  # [B,H,c,S]
            allowed = (key_pos[None, :] <= cols[:, None])[None].expand(b, -1, -1)
            if self.padding_mask is not None:
                allowed = allowed & self.padding_mask.to(device).bool()[:, None, :]
            dead = ~allowed.any(dim=-1, keepdim=True)
            allowed = allowed | (dead & (key_pos == 0))
            probs = torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
            audio = probs.gather(-1, index[:, None, None, :].expand(b, h, cols.numel(), -1))  # [B,H,c,A]
            reduced = audio.mean(dim=1) if self.head_reduce == "mean" else audio.max(dim=1).values
            out[:, cols] = reduced
        out = out * self.query_mask.to(device)[..., None] * self.audio_valid.to(device)[:, None, :]
        self._sum = out if self._sum is None else self._sum + out

    @property
    def attention(self) -> torch.Tensor:
        missing = sorted(set(self.target_layers) - self._layers_seen)
        if self._sum is None or missing:
            raise RuntimeError(
                f"no attention was captured for target layers {missing}: run exactly one forward of the model "
                "(without a KV cache) inside the audio_key_attention() block"
            )
        return self._sum / len(self.target_layers)


@contextlib.contextmanager
def audio_key_attention(
    model: nn.Module,
    audio_key_mask: torch.Tensor,
    query_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    target_layers: Sequence[int] | None = None,
    head_reduce: str = "mean",
    chunk_size: int = 128,
    spec: ModalitySpec | None = None,
) -> Iterator[KeyAttentionCapture]:
    """Capture the attention of the ``query_mask`` rows to every audio key during one forward inside the block.

    Args:
        audio_key_mask: bool ``[B, L]`` audio keys (:func:`mapo.modality.audio_key_mask`).
        query_mask: bool ``[B, L]`` query rows (e.g. :func:`mapo.modality.completion_query_mask`).
        attention_mask: ``[B, L]`` 0/1 padding mask of the forward (keys at 0 are masked).
        target_layers: decoder layers; default the last five (as the probe).
        head_reduce: "mean" or "max" over heads; layers are averaged.
        spec: where the decoder is (default: the family's built-in spec, :func:`mapo.modality.resolve_decoder`).
    """
    if head_reduce not in ("mean", "max"):
        raise ValueError(f"head_reduce must be 'mean' or 'max', got {head_reduce!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if audio_key_mask.shape != query_mask.shape or audio_key_mask.dim() != 2:
        raise ValueError(
            f"audio_key_mask {tuple(audio_key_mask.shape)} and query_mask {tuple(query_mask.shape)} must both be [B, L]"
        )
    handle = resolve_decoder(model, spec)
    layers = resolve_target_layers(target_layers, handle.num_layers)
    capture = KeyAttentionCapture(
        audio_key_mask.bool(), attention_mask, query_mask.bool(), layers, head_reduce, chunk_size
    )
    with attention_observer(handle, lambda: capture):
        yield capture
