"""GRPO advantages, the reweighted clipped surrogate (eq. 2), the k3 KL and the bridge to TRL's advantages."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks as chk
from .weights import agg_loss

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
