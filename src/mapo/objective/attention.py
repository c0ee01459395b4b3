"""The attention loss of MAPO (eq. 4): prefactor, per-token coefficients and the −log(a_t + ε) penalty."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks as chk
from .weights import _clip, _nu_raw, _temporal, agg_loss


def _prefactor_checked(
    adv: Tensor, failed: Tensor, fail_gate_floor: float, advantage_floor: float, prefactor_clip: float | None
) -> Tensor:
    gate = torch.where(failed, 1.0, torch.full_like(adv, fail_gate_floor))  # f̂ = max(1[failed], α), α ≤ 1
    scale = torch.where(failed, adv.abs().clamp(min=advantage_floor), adv.abs())
    return _clip(gate * scale, prefactor_clip)


def _attention_hparams(fail_gate_floor, advantage_floor, prefactor_clip) -> tuple[float, float, float | None]:
    return (
        chk.number("fail_gate_floor", fail_gate_floor, minimum=0.0, maximum=1.0),
        chk.number("advantage_floor", advantage_floor, minimum=0.0),
        chk.clip_value("prefactor_clip", prefactor_clip),
    )


def _seq_advantages(advantages: object, batch: int | None = None) -> Tensor:
    a = chk._require_tensor("advantages", advantages)
    if a.dim() != 1:
        raise ValueError(
            f"advantages must be [B] sequence-level Â here (eq. 4 scales each sequence by |Â|), got shape "
            f"{tuple(a.shape)}; pass the advantages before folding ω̃ into them"
        )
    return chk.seq_values("advantages", a, a.shape[0] if batch is None else batch).detach()


def attention_prefactor(
    advantages: Tensor,
    failed: Tensor,
    *,
    fail_gate_floor: float = 0.1,
    advantage_floor: float = 0.1,
    prefactor_clip: float | None = 3.0,
) -> Tensor:
    """Sequence prefactor of eq. 4: min(f̂ · s, C_pref), f̂ = max(1[failed], α), s = max(|Â|, ε) if failed else |Â|.

    Args:
        advantages: ``[B]`` sequence-level Â.
        failed: ``[B]`` bool / 0-1, 1[r_acc ≤ θ_fail].
        fail_gate_floor: α ∈ [0, 1].
        advantage_floor: ε ≥ 0 (Table 5 "advantage floor"); applies to failed samples only, so a failed sample in
            an all-equal group (Â = 0) is still penalised.
        prefactor_clip: C_pref > 0, or ``None``.

    Returns:
        ``[B]`` detached prefactors.
    """
    adv = _seq_advantages(advantages)
    f = chk.seq_flags("failed", failed, adv.shape[0])
    return _prefactor_checked(adv, f, *_attention_hparams(fail_gate_floor, advantage_floor, prefactor_clip))


def attention_coefficients(
    delta_h: Tensor,
    pos_gate: Tensor,
    advantages: Tensor,
    failed: Tensor,
    mask: Tensor,
    *,
    tau_base: float = 1.0,
    mask_clip: float | None = 5.0,
    kappa: float = 1.0,
    fail_gate_floor: float = 0.1,
    advantage_floor: float = 0.1,
    prefactor_clip: float | None = 3.0,
) -> Tensor:
    """Detached per-token coefficient of eq. 4: c_bt = min(f̂ s, C_pref)_b / max(N_pos,b, 1) · (t/T)^κ · ν̃_bt.

    Then L_attn = mean_b Σ_t c_bt · (−log(a_bt + ε)) (:func:`attention_loss_from_coefficients`). Computing c at
    generation time and the penalty at loss time is the split the trainer needs. Shapes: ``[B, T]`` for delta_h,
    pos_gate and mask; ``[B]`` for advantages (sequence-level Â) and failed. Returns ``[B, T]``, 0 outside the POS
    gate and on padding. Arguments as in :func:`inverse_relevance_weight`, :func:`temporal_weight` and
    :func:`attention_prefactor`.
    """
    m = chk.check_mask(mask)
    dh = chk.token_values("delta_h", delta_h, m).detach()
    active = chk.token_gate("pos_gate", pos_gate, m)
    adv = _seq_advantages(advantages, m.shape[0])
    f = chk.seq_flags("failed", failed, m.shape[0])
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    mask_clip = chk.clip_value("mask_clip", mask_clip)
    kappa = chk.number("kappa", kappa, minimum=0.0)
    hp = _attention_hparams(fail_gate_floor, advantage_floor, prefactor_clip)
    return _attention_parts(dh, active, m, adv, f, tau_base, mask_clip, kappa, hp)[0]


def _attention_parts(dh, active, m, adv, failed, tau_base, clip, kappa, hp) -> tuple[Tensor, Tensor, Tensor]:
    """(coefficients, unclipped ν̃, prefactor) from validated inputs; shared by the public API and mapo_loss."""
    nu_raw = _nu_raw(dh, active, m, tau_base)
    n_pos = active.sum(dim=1).to(dh.dtype).clamp(min=1.0)
    pref = _prefactor_checked(adv.to(dh.dtype), failed, *hp)
    coef = (pref / n_pos).unsqueeze(1) * _temporal(m, kappa, dh.dtype) * _clip(nu_raw, clip)
    return coef, nu_raw, pref


def attention_loss_from_coefficients(audio_mass: Tensor, coef: Tensor, log_eps: float = 1e-6) -> Tensor:
    """L_attn = mean_b Σ_t c_bt · (−log(a_bt + ε)) (eq. 4) from :func:`attention_coefficients`.

    Args:
        audio_mass: ``[B, T]`` audio attention mass a_t (§3.2) of the query that predicts y_t; the gradient flows
            only through it. Read only where ``coef > 0``; there it must be finite with a + ε > 0.
        coef: ``[B, T]`` non-negative detached coefficients (0 on padding).
        log_eps: ε > 0 of the log-penalty (the paper's ε in −log(a_t + ε); not the advantage floor).

    Returns:
        Scalar loss.
    """
    c = chk._require_tensor("coef", coef)
    if c.dim() != 2:
        raise ValueError(f"coef must be a [B, T] tensor, got shape {tuple(c.shape)}")
    c = chk.token_weights("coef", c, torch.ones_like(c, dtype=torch.bool)).detach()
    log_eps = chk.number("log_eps", log_eps, minimum=0.0, strict=True)
    active = c > 0
    a = chk.token_values("audio_mass", audio_mass, active, ref="coef")
    if bool((a[active] + log_eps <= 0).any()):
        raise ValueError("audio_mass must be >= 0 (an attention probability mass) where the loss reads it")
    penalty = -torch.log(torch.where(active, a, 1.0) + log_eps)
    return agg_loss(penalty, c.to(penalty.dtype), "seq-mean-token-sum")


def attention_loss(
    audio_mass: Tensor,
    delta_h: Tensor,
    pos_gate: Tensor,
    advantages: Tensor,
    failed: Tensor,
    mask: Tensor,
    *,
    tau_base: float = 1.0,
    mask_clip: float | None = 5.0,
    kappa: float = 1.0,
    fail_gate_floor: float = 0.1,
    advantage_floor: float = 0.1,
    prefactor_clip: float | None = 3.0,
    log_eps: float = 1e-6,
) -> Tensor:
    """Attention loss L_attn (eq. 4): mean_b min(f̂ s, C_pref) / max(N_pos, 1) · Σ_t (t/T)^κ ν̃_t (−log(a_t + ε)).

    ``audio_mass``, ``delta_h``, ``pos_gate``, ``mask``: ``[B, T]``; ``advantages`` (Â), ``failed``: ``[B]``.
    Gradient flows only through ``audio_mass``. Built from :func:`attention_coefficients` and
    :func:`attention_loss_from_coefficients` (one implementation).
    """
    m = chk.check_mask(mask)
    a = chk.token_values("audio_mass", audio_mass, m)
    coef = attention_coefficients(
        delta_h,
        pos_gate,
        advantages,
        failed,
        m,
        tau_base=tau_base,
        mask_clip=mask_clip,
        kappa=kappa,
        fail_gate_floor=fail_gate_floor,
        advantage_floor=advantage_floor,
        prefactor_clip=prefactor_clip,
    )
    return attention_loss_from_coefficients(a, coef, log_eps=log_eps)
