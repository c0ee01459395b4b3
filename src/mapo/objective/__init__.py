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
* Clip thresholds (``mask_clip`` = C_mask, ``prefactor_clip`` = C_pref) must be > 0; ``None`` disables a clip (the public
  reference used 0 for that, which we reject as ambiguous).
* Weights, masks, advantages and reference log-probs are detached; gradients flow only through ``logps`` (PG, KL)
  and ``audio_mass`` (attention loss).

Modules, one per part of the objective (import the names from ``mapo.objective``): ``weights`` (ω̃ eq. 1, ν̃ eq. 3,
the temporal weight, :func:`agg_loss`), ``policy`` (GRPO advantages, eq. 2, k3 KL, the fold into TRL's advantages),
``attention`` (eq. 4), ``total`` (eq. 5).

All reductions go through :func:`agg_loss` (verl's ``agg_loss`` idea). Hyper-parameter defaults are the paper's
Table 5 (appendix F); the public code's launcher used different values (research/reference-mapo-release.md §16.1).
"""

from __future__ import annotations

from .attention import (
    attention_coefficients,
    attention_loss,
    attention_loss_from_coefficients,
    attention_prefactor,
)
from .policy import fold_weights_into_advantages, group_advantages, kl_k3, policy_gradient_loss
from .total import mapo_loss
from .weights import (
    AggMode,
    agg_loss,
    inverse_relevance_weight,
    length_temperature,
    relevance_mask,
    temporal_weight,
)

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
