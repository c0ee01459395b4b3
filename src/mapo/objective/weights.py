"""Token weights of MAPO and the one aggregation helper: ω̃ (eq. 1), ν̃ (eq. 3), the temporal weight (eq. 4)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import _checks as chk

AggMode = Literal["seq-mean-token-mean", "seq-mean-token-sum", "token-mean"]


# ----------------------------------------------------------------------------------------------------------------
# The one aggregation helper
# ----------------------------------------------------------------------------------------------------------------


def agg_loss(per_token: Tensor, weights: Tensor, mode: AggMode = "seq-mean-token-mean") -> Tensor:
    """Reduce a ``[B, T]`` per-token quantity with non-negative ``[B, T]`` weights (0 on padding) to a scalar.

    * ``"seq-mean-token-mean"``: mean_b [Σ_t w x / Σ_t w]; a row with Σ_t w = 0 contributes 0 (eq. 2, k3 KL, and
      TRL's ``loss_type="grpo"`` when w = mask, since Σ m is an integer: Σ m / max(1, Σ m)).
    * ``"seq-mean-token-sum"``: mean_b Σ_t w x (eq. 4, whose weights already hold the 1/N_pos).
    * ``"token-mean"``: Σ_bt w x / Σ_bt w, 0 when Σ w = 0 (batch-level token mean, used for metrics).

    Positions with w = 0 never contribute, even if ``per_token`` is not finite there.
    """
    contrib = torch.where(weights != 0, per_token * weights, 0.0)
    if mode == "seq-mean-token-mean":
        den = weights.sum(dim=1)
        return (contrib.sum(dim=1) / torch.where(den > 0, den, 1.0)).mean()
    if mode == "seq-mean-token-sum":
        return contrib.sum(dim=1).mean()
    if mode == "token-mean":
        den = weights.sum()
        return contrib.sum() / torch.where(den > 0, den, 1.0)
    raise ValueError(f"mode must be one of {AggMode.__args__}, got {mode!r}")


# ----------------------------------------------------------------------------------------------------------------
# Token weights: ω̃ (eq. 1), ν̃ (eq. 3), temporal weight (eq. 4)
# ----------------------------------------------------------------------------------------------------------------


def length_temperature(mask: Tensor, tau_base: float = 1.0) -> Tensor:
    """τ_T = τ_base · ln(max(T, 2)) per sequence (eq. 1), T = Σ_t mask. ``[B, T]`` mask → ``[B]`` float."""
    m = chk.check_mask(mask)
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    return _tau(m, tau_base, _float_dtype(mask))


def _float_dtype(mask: Tensor) -> torch.dtype:
    return torch.float64 if mask.dtype == torch.float64 else torch.float32


def _tau(m: Tensor, tau_base: float, dtype: torch.dtype) -> Tensor:
    return tau_base * torch.log(m.sum(dim=1).to(dtype).clamp(min=2.0))


def _scaled_softmax(scores: Tensor, active: Tensor) -> Tensor:
    """N_active · softmax(scores) over the active positions of each row; 0 elsewhere and on rows with none."""
    s = scores.masked_fill(~active, float("-inf"))
    row_max = s.amax(dim=1, keepdim=True)
    # An empty row has max -inf; use 0 so that every exp below is exp(-inf) = 0 instead of NaN.
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0)
    e = torch.exp(s - row_max)
    z = e.sum(dim=1, keepdim=True)
    n_active = active.sum(dim=1, keepdim=True).to(scores.dtype)
    return e / torch.where(z > 0, z, 1.0) * n_active


def _clip(x: Tensor, clip: float | None) -> Tensor:
    return x if clip is None else x.clamp(max=clip)


def _omega_raw(dh: Tensor, m: Tensor, tau_base: float) -> Tensor:
    return _scaled_softmax(dh.abs() / _tau(m, tau_base, dh.dtype).unsqueeze(1), m)


def _nu_raw(dh: Tensor, active: Tensor, m: Tensor, tau_base: float) -> Tensor:
    # τ_T uses the full completion length T, not N_pos (eq. 3; the reference does the same).
    return _scaled_softmax(-dh.abs() / _tau(m, tau_base, dh.dtype).unsqueeze(1), active)


def relevance_mask(
    delta_h: Tensor, mask: Tensor, tau_base: float = 1.0, mask_clip: float | None = 5.0
) -> Tensor:
    """Modality relevance mask ω̃ (eq. 1): min(T · softmax_t(|Δh_t| / τ_T), C_mask), detached.

    Args:
        delta_h: ``[B, T]`` cross-modal differential entropy Δh = H_text-ref − H_policy (§3.3); only |Δh| is used.
        mask: ``[B, T]`` 0/1 completion mask; the softmax runs over each sequence's completion tokens only.
        tau_base: τ_base > 0; τ_T = τ_base · ln(max(T, 2)) with T = Σ_t mask of that sequence.
        mask_clip: C_mask > 0, or ``None`` for no clip.

    Returns:
        ``[B, T]`` weights, 0 on padding, Σ_t ω̃ = T when the clip does not bind; an empty row is all 0.
    """
    m = chk.check_mask(mask)
    dh = chk.token_values("delta_h", delta_h, m).detach()
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    return _clip(_omega_raw(dh, m, tau_base), chk.clip_value("mask_clip", mask_clip))


def inverse_relevance_weight(
    delta_h: Tensor, pos_gate: Tensor, mask: Tensor, tau_base: float = 1.0, mask_clip: float | None = 5.0
) -> Tensor:
    """Inverse relevance weight ν̃ (eq. 3): min(N_pos · softmax over POS-active tokens of −|Δh_t| / τ_T, C_mask).

    Args:
        delta_h: ``[B, T]`` Δh.
        pos_gate: ``[B, T]`` 0/1 POS gate g^pos (read on completion positions only).
        mask: ``[B, T]`` 0/1 completion mask; the active set is g^pos · mask, N_pos = its size.
        tau_base: τ_base > 0; τ_T is computed from the full completion length T (not N_pos).
        mask_clip: C_mask > 0 (the same cap as ω̃), or ``None``.

    Returns:
        ``[B, T]`` detached weights, 0 outside the active set; Σ_t ν̃ = N_pos when the clip does not bind; a
        sequence with no POS-active token is all 0.
    """
    m = chk.check_mask(mask)
    dh = chk.token_values("delta_h", delta_h, m).detach()
    active = chk.token_gate("pos_gate", pos_gate, m)
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    return _clip(_nu_raw(dh, active, m, tau_base), chk.clip_value("mask_clip", mask_clip))


def temporal_weight(mask: Tensor, kappa: float = 1.0) -> Tensor:
    """Temporal weight (t/T)^κ of eq. 4, t = 1-based index over completion tokens, κ ≥ 0 (κ = 0 → 1).

    ``[B, T]`` mask → ``[B, T]`` float weights (float64 if the mask is float64, else float32), 0 on padding.
    """
    m = chk.check_mask(mask)
    kappa = chk.number("kappa", kappa, minimum=0.0)
    return _temporal(m, kappa, _float_dtype(mask))


def _temporal(m: Tensor, kappa: float, dtype: torch.dtype) -> Tensor:
    mf = m.to(dtype)
    t = mf.cumsum(dim=1)
    length = mf.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.where(m, (t / length) ** kappa, 0.0)


def _clipped(raw: Tensor, clip: float | None) -> Tensor:
    """1.0 where the clip binds (raw value above it), else 0.0."""
    return torch.zeros_like(raw) if clip is None else (raw > clip).to(raw.dtype)
