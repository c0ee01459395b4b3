"""The MAPO objective as pure tensor math (paper §3, eq. 1-5): tensors in, tensors out; no model, no TRL.

Conventions (design.md §2):

* Per-token tensors are right-padded ``[B, T]`` and come with a 0/1 (or bool) completion ``mask``. Index t holds
  the quantities of the *generated* token y_t: log π(y_t | y_<t, x), the entropies that produced y_t (hence Δh_t),
  the POS gate of y_t and the audio attention mass of the query that predicts y_t.
* The completion length T of a sequence is Σ_t mask; the temporal index t is 1-based over completion tokens (the
  running count of mask ones), so the last completion token has temporal weight 1.
* Padding never changes a result: values under ``mask == 0`` are never read (finite garbage, NaN and inf alike are
  replaced through ``torch.where``, so they reach neither the value nor any gradient). Non-finite values at
  completion positions raise ``ValueError``.
* A sequence with an empty completion (Σ mask = 0) contributes 0 to every loss but still counts in the mean over
  the B sequences, exactly like TRL's ``loss_type="grpo"`` (Σ ℓ m / max(1, Σ m)).
* Clip thresholds (``clip`` = C_mask, ``prefactor_clip`` = C_pref) must be > 0; ``None`` disables a clip (the public
  reference used 0 for that, which we reject as ambiguous).
* Weights, masks, advantages and reference log-probs are detached; gradients flow only through ``logps`` (PG, KL)
  and ``audio_mass`` (attention loss).

All reductions go through :func:`agg_loss` (verl's ``agg_loss`` idea). Hyper-parameter defaults are the paper's
Table 5 (appendix F); the public code's launcher used different values (research/reference-mapo-release.md §16.1).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import _checks as chk

__all__ = [
    "AggMode",
    "agg_loss",
    "attention_coefficients",
    "attention_loss",
    "attention_loss_from_coefficients",
    "attention_prefactor",
    "fold_weights_into_advantages",
    "group_advantages",
    "inverse_relevance_weight",
    "kl_k3",
    "length_temperature",
    "mapo_loss",
    "policy_gradient_loss",
    "relevance_mask",
    "temporal_weight",
]

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
# Advantages
# ----------------------------------------------------------------------------------------------------------------


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """GRPO advantages Â = (r − mean_g r) / (std_g r + eps) over consecutive groups (paper §2, TRL's convention).

    Args:
        rewards: ``[B]`` scalar rewards, B a multiple of ``group_size``; samples of one prompt are consecutive.
        group_size: G ≥ 2 (the unbiased, n−1 standard deviation needs two samples).
        eps: > 0, added to the std so an all-equal group gives Â = 0.

    Returns:
        ``[B]`` advantages (no gradient is expected through rewards; none is blocked either).
    """
    r = chk.seq_values("rewards", rewards, None)
    group_size = chk.group_size(group_size, r.shape[0])
    eps = chk.number("eps", eps, minimum=0.0, strict=True)
    g = r.view(-1, group_size)
    adv = (g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


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


def relevance_mask(delta_h: Tensor, mask: Tensor, tau_base: float = 1.0, clip: float | None = 5.0) -> Tensor:
    """Modality relevance mask ω̃ (eq. 1): min(T · softmax_t(|Δh_t| / τ_T), C_mask), detached.

    Args:
        delta_h: ``[B, T]`` cross-modal differential entropy Δh = H_text-ref − H_policy (§3.3); only |Δh| is used.
        mask: ``[B, T]`` 0/1 completion mask; the softmax runs over each sequence's completion tokens only.
        tau_base: τ_base > 0; τ_T = τ_base · ln(max(T, 2)) with T = Σ_t mask of that sequence.
        clip: C_mask > 0, or ``None`` for no clip.

    Returns:
        ``[B, T]`` weights, 0 on padding, Σ_t ω̃ = T when the clip does not bind; an empty row is all 0.
    """
    m = chk.check_mask(mask)
    dh = chk.token_values("delta_h", delta_h, m).detach()
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    return _clip(_omega_raw(dh, m, tau_base), chk.clip_value("clip", clip))


def inverse_relevance_weight(
    delta_h: Tensor, pos_gate: Tensor, mask: Tensor, tau_base: float = 1.0, clip: float | None = 5.0
) -> Tensor:
    """Inverse relevance weight ν̃ (eq. 3): min(N_pos · softmax over POS-active tokens of −|Δh_t| / τ_T, C_mask).

    Args:
        delta_h: ``[B, T]`` Δh.
        pos_gate: ``[B, T]`` 0/1 POS gate g^pos (read on completion positions only).
        mask: ``[B, T]`` 0/1 completion mask; the active set is g^pos · mask, N_pos = its size.
        tau_base: τ_base > 0; τ_T is computed from the full completion length T (not N_pos).
        clip: C_mask > 0 (the same cap as ω̃), or ``None``.

    Returns:
        ``[B, T]`` detached weights, 0 outside the active set; Σ_t ν̃ = N_pos when the clip does not bind; a
        sequence with no POS-active token is all 0.
    """
    m = chk.check_mask(mask)
    dh = chk.token_values("delta_h", delta_h, m).detach()
    active = chk.token_gate("pos_gate", pos_gate, m)
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    return _clip(_nu_raw(dh, active, m, tau_base), chk.clip_value("clip", clip))


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


# ----------------------------------------------------------------------------------------------------------------
# Policy gradient (eq. 2), KL (k3) and the TRL bridge
# ----------------------------------------------------------------------------------------------------------------


def policy_gradient_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    weights: Tensor,
    mask: Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> Tensor:
    """Reweighted clipped surrogate L_PG(ω̃) (eq. 2): mean_b [Σ_t w ℓ_t / Σ_t w], w = weights · mask.

    ℓ_t = −min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â), ρ_t = exp(logps − old_logps). With weights = mask this
    is plain GRPO (TRL ``loss_type="grpo"``). A sequence with Σ_t w = 0 contributes 0 and still counts in the mean.

    Args:
        logps: ``[B, T]`` log π_θ(y_t | y_<t, x); the only input the gradient flows through.
        old_logps: ``[B, T]`` log-probs of the sampling policy (detached).
        advantages: ``[B]`` (broadcast over tokens) or ``[B, T]`` (detached).
        weights: ``[B, T]`` non-negative token weights, e.g. ω̃ from :func:`relevance_mask` (detached).
        mask: ``[B, T]`` 0/1 completion mask.
        epsilon_low, epsilon_high: ε of the ratio clip, 0 ≤ ε_low ≤ 1, ε_high ≥ 0.

    Returns:
        Scalar loss.
    """
    m = chk.check_mask(mask)
    lp = chk.token_values("logps", logps, m)
    old = chk.token_values("old_logps", old_logps, m).detach()
    adv = chk.advantages_per_token("advantages", advantages, m).detach()
    w = chk.token_weights("weights", weights, m).detach()
    eps_lo = chk.number("epsilon_low", epsilon_low, minimum=0.0, maximum=1.0)
    eps_hi = chk.number("epsilon_high", epsilon_high, minimum=0.0)
    ratio = torch.exp(lp - old)
    per_token = -torch.min(ratio * adv, ratio.clamp(1.0 - eps_lo, 1.0 + eps_hi) * adv)
    return agg_loss(per_token, w, "seq-mean-token-mean")


def kl_k3(logps: Tensor, ref_logps: Tensor, mask: Tensor) -> Tensor:
    """k3 KL estimator (paper §2): exp(r − l) − (r − l) − 1 with l = logps, r = ref_logps, unweighted.

    ``[B, T]`` inputs → scalar: per-sequence mean over completion tokens, then mean over sequences (TRL's ``grpo``
    reduction). The gradient flows through ``logps`` only.
    """
    m = chk.check_mask(mask)
    lp = chk.token_values("logps", logps, m)
    ref = chk.token_values("ref_logps", ref_logps, m).detach()
    d = ref - lp
    return agg_loss(torch.exp(d) - d - 1.0, m.to(lp.dtype), "seq-mean-token-mean")


def fold_weights_into_advantages(advantages: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """Fold token weights into ``[B, T]`` advantages so TRL's ``loss_type="grpo"`` computes eq. 2 exactly.

    A'_bt = Â_b · w_bt · (Σ_t m_bt / Σ_t w_bt), so Σ_t w' = Σ_t m per sequence. min/clip commute with a
    non-negative per-token scale, so Σ_t ℓ_t(A') m_t / max(1, Σ m) = Σ_t w ℓ_t(Â) / Σ w. A sequence whose weights
    sum to 0 gets A' = 0 (it contributes 0, as in :func:`policy_gradient_loss`).

    Args:
        advantages: ``[B]`` (or already per-token ``[B, T]``) advantages.
        weights: ``[B, T]`` non-negative weights, e.g. ω̃.
        mask: ``[B, T]`` 0/1 completion mask.

    Returns:
        ``[B, T]`` detached advantages, 0 on padding.
    """
    m = chk.check_mask(mask)
    adv = chk.advantages_per_token("advantages", advantages, m).detach()
    w = chk.token_weights("weights", weights, m).detach()
    n = m.to(w.dtype).sum(dim=1, keepdim=True)
    s = w.sum(dim=1, keepdim=True)
    scale = torch.where(s > 0, n / torch.where(s > 0, s, 1.0), 0.0)
    return adv * w * scale


# ----------------------------------------------------------------------------------------------------------------
# Attention loss (eq. 4)
# ----------------------------------------------------------------------------------------------------------------


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
    clip: float | None = 5.0,
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
    clip = chk.clip_value("clip", clip)
    kappa = chk.number("kappa", kappa, minimum=0.0)
    hp = _attention_hparams(fail_gate_floor, advantage_floor, prefactor_clip)
    return _attention_parts(dh, active, m, adv, f, tau_base, clip, kappa, hp)[0]


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
    clip: float | None = 5.0,
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
        clip=clip,
        kappa=kappa,
        fail_gate_floor=fail_gate_floor,
        advantage_floor=advantage_floor,
        prefactor_clip=prefactor_clip,
    )
    return attention_loss_from_coefficients(a, coef, log_eps=log_eps)


# ----------------------------------------------------------------------------------------------------------------
# Total (eq. 5)
# ----------------------------------------------------------------------------------------------------------------


def _required(name: str, value: Tensor | None, why: str) -> Tensor:
    if value is None:
        raise ValueError(f"{name} is required {why}")
    return value


def mapo_loss(
    *,
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    delta_h: Tensor | None = None,
    ref_logps: Tensor | None = None,
    audio_mass: Tensor | None = None,
    pos_gate: Tensor | None = None,
    failed: Tensor | None = None,
    beta: float = 0.002,
    eta: float = 0.1,
    use_relevance_mask: bool = True,
    tau_base: float = 1.0,
    mask_clip: float | None = 5.0,
    kappa: float = 1.0,
    fail_gate_floor: float = 0.1,
    advantage_floor: float = 0.1,
    prefactor_clip: float | None = 3.0,
    log_eps: float = 1e-6,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> tuple[Tensor, dict[str, float]]:
    """Total MAPO loss (eq. 5): L_PG(ω̃) + β · L_KL + η · L_attn, and detached metrics.

    Per-token inputs are ``[B, T]``; ``advantages`` is the sequence-level ``[B]`` Â; ``failed`` is ``[B]``.
    ``delta_h`` is needed when ``use_relevance_mask`` or η ≠ 0; ``ref_logps`` when β ≠ 0; ``audio_mass``,
    ``pos_gate`` and ``failed`` when η ≠ 0. β = 0 and η = 0 skip their terms; ``use_relevance_mask=False`` uses
    ω̃ ≡ 1 (plain GRPO's 1/T average), so ``use_relevance_mask=False, eta=0`` is exactly TRL's GRPO loss.
    ``mask_clip`` is C_mask (for ω̃ and ν̃); the other hyper-parameters are those of the functions above.

    Returns:
        ``(loss, metrics)``: metrics is a dict of python floats: ``loss``, ``pg_loss``, ``advantage_abs_mean``,
        ``kl`` (when ``ref_logps`` is given), ``delta_h_abs_mean`` (when ``delta_h`` is given), ``omega_max``,
        ``omega_mean``, ``omega_clip_frac`` (when ω̃ is used), and with η ≠ 0 ``attn_loss``, ``nu_max``,
        ``nu_mean``, ``nu_clip_frac``, ``prefactor_mean``, ``failed_frac``, ``pos_gate_frac``,
        ``audio_mass_mean``. Means over tokens are over completion (for ν̃: POS-active) tokens.
    """
    m = chk.check_mask(mask)
    beta = chk.number("beta", beta, minimum=0.0)
    eta = chk.number("eta", eta, minimum=0.0)
    tau_base = chk.number("tau_base", tau_base, minimum=0.0, strict=True)
    mask_clip = chk.clip_value("mask_clip", mask_clip)
    kappa = chk.number("kappa", kappa, minimum=0.0)
    log_eps = chk.number("log_eps", log_eps, minimum=0.0, strict=True)
    hp = _attention_hparams(fail_gate_floor, advantage_floor, prefactor_clip)  # validated even when η = 0
    adv = _seq_advantages(advantages, m.shape[0])
    mf = m.to(adv.dtype)
    metrics: dict[str, float] = {}

    dh = None
    if delta_h is not None or use_relevance_mask or eta != 0:
        why = "when use_relevance_mask=True or eta != 0 (it drives ω̃ and ν̃)"
        dh = chk.token_values("delta_h", _required("delta_h", delta_h, why), m).detach()
        _stat_mean(metrics, "delta_h_abs_mean", dh.abs(), mf)

    if use_relevance_mask:
        raw = _omega_raw(dh, m, tau_base)
        weights = _clip(raw, mask_clip)
        _stat_max(metrics, "omega_max", weights, m)
        _stat_mean(metrics, "omega_mean", weights, mf)
        _stat_mean(metrics, "omega_clip_frac", _clipped(raw, mask_clip), mf)
    else:
        weights = mf
    pg = policy_gradient_loss(logps, old_logps, adv, weights, m, epsilon_low, epsilon_high)
    loss = pg
    metrics["pg_loss"] = float(pg.detach())
    metrics["advantage_abs_mean"] = float(adv.abs().mean())

    if ref_logps is not None or beta != 0:
        kl = kl_k3(logps, _required("ref_logps", ref_logps, "when beta != 0 (pass beta=0 to skip the KL)"), m)
        metrics["kl"] = float(kl.detach())
        if beta != 0:
            loss = loss + beta * kl

    if eta != 0:
        why = "when eta != 0 (pass eta=0 for the mask-only ablation)"
        a = chk.token_values("audio_mass", _required("audio_mass", audio_mass, why), m)
        active = chk.token_gate("pos_gate", _required("pos_gate", pos_gate, why), m)
        f = chk.seq_flags("failed", _required("failed", failed, why), m.shape[0])
        coef, nu_raw, pref = _attention_parts(dh, active, m, adv, f, tau_base, mask_clip, kappa, hp)
        attn = attention_loss_from_coefficients(a, coef, log_eps=log_eps)
        loss = loss + eta * attn
        af = active.to(mf.dtype)
        metrics.update(attn_loss=float(attn.detach()), prefactor_mean=float(pref.mean()))
        metrics["failed_frac"] = float(f.to(mf.dtype).mean())
        _stat_max(metrics, "nu_max", _clip(nu_raw, mask_clip), active)
        _stat_mean(metrics, "nu_mean", _clip(nu_raw, mask_clip), af)
        _stat_mean(metrics, "nu_clip_frac", _clipped(nu_raw, mask_clip), af)
        _stat_mean(metrics, "pos_gate_frac", af, mf)
        _stat_mean(metrics, "audio_mass_mean", a.detach(), mf)

    metrics["loss"] = float(loss.detach())
    return loss, metrics


def _clipped(raw: Tensor, clip: float | None) -> Tensor:
    """1.0 where the clip binds (raw value above it), else 0.0."""
    return torch.zeros_like(raw) if clip is None else (raw > clip).to(raw.dtype)


def _stat_mean(out: dict[str, float], key: str, x: Tensor, weights: Tensor) -> None:
    out[key] = float(agg_loss(x.detach(), weights, "token-mean"))


def _stat_max(out: dict[str, float], key: str, x: Tensor, where: Tensor) -> None:
    v = x.detach()[where]
    out[key] = float(v.max()) if v.numel() else 0.0
