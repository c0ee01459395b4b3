"""The audio attention mass computed the obvious way: materialise softmax(QKᵀ), sum the audio columns.

This is the reference the probe (:mod:`mapo.probe`) is tested against and the "naive" row of
``benchmarks/probe_overhead.py``. It builds the ``[B, H, T_q, S]`` attention matrix in fp32, so it costs
O(H·T_q·S) memory per target layer; use it for checks and diagnostics, never in training.

Its mask is built here from the 2-D padding mask (causal AND key not padded), independently of the 4-D mask
transformers hands to attention implementations, so a wrong mask on either side shows up as a mismatch.
Layers with a sliding window are not modelled (the Qwen audio/omni decoders use full attention).
"""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import repeat_kv

__all__ = ["naive_head_mass"]


def naive_head_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    audio: torch.Tensor,
    query_columns: torch.Tensor,
    scale: float,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-head audio mass m_t^(l,h) = Σ_{j∈S_audio} α_{t,j}^(l,h) (paper §3.2) by explicit softmax.

    Args:
        query: ``[B, H, L, E]`` queries after RoPE (as the attention implementation receives them).
        key: ``[B, H_kv, S, E]`` keys after RoPE; GQA heads are expanded with ``repeat_kv``.
        audio: bool ``[B, S]`` audio key mask.
        query_columns: long ``[T_q]`` query positions to evaluate.
        scale: softmax scale (``module.scaling``).
        padding_mask: ``[B, S]`` 0/1 key padding mask, or ``None`` for no padding.

    Returns:
        fp32 ``[B, H, T_q]``. Rows whose every key is masked (left padding) are 0 (and have finite gradients).
    """
    b, h, q_len, _ = query.shape
    s = key.shape[2]
    k = repeat_kv(key, h // key.shape[1]).float()
    q = query.index_select(2, query_columns).float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, H, T_q, S]
    key_pos = torch.arange(s, device=query.device)
    # Query position i (of L) sees keys up to i + (S - L): causal with any cached prefix.
    allowed = key_pos[None, :] <= (query_columns[:, None] + (s - q_len))  # [T_q, S]
    allowed = allowed.unsqueeze(0).expand(b, -1, -1)
    if padding_mask is not None:
        allowed = allowed & padding_mask.bool()[:, None, :]
    # A fully masked row would be NaN (and poison gradients through 0·NaN): let it see key 0; callers zero it.
    dead = ~allowed.any(dim=-1, keepdim=True)
    allowed = allowed | (dead & (key_pos == 0))
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    mass = (probs * audio.to(probs.dtype)[:, None, None, :]).sum(dim=-1)
    return mass.masked_fill(dead.squeeze(-1)[:, None, :], 0.0)
