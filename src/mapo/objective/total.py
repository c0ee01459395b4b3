"""The total MAPO loss (eq. 5) with its detached metrics."""

from __future__ import annotations

from torch import Tensor

from . import _checks as chk
from .attention import _attention_hparams, _attention_parts, _seq_advantages, attention_loss_from_coefficients
from .policy import kl_k3, policy_gradient_loss
from .weights import _clip, _clipped, _omega_raw, agg_loss


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


def _stat_mean(out: dict[str, float], key: str, x: Tensor, weights: Tensor) -> None:
    out[key] = float(agg_loss(x.detach(), weights, "token-mean"))


def _stat_max(out: dict[str, float], key: str, x: Tensor, where: Tensor) -> None:
    v = x.detach()[where]
    out[key] = float(v.max()) if v.numel() else 0.0
