"""Modality gap per layer: how far apart the audio-token and text-token hidden states are.

For each layer, the hidden states of the audio placeholder positions and of the text positions of the same
prompts (start/end markers and padding excluded) form two point clouds A and T. Reported
(:func:`modality_gap`):

* ``centroid_l2`` = ‖μ_A − μ_T‖₂ and ``centroid_cosine`` = 1 − cos(μ_A, μ_T) (the "modality gap" of contrastive
  models: a constant offset between modalities);
* ``centroid_l2_relative`` = ‖μ_A − μ_T‖ / √((tr Σ_A + tr Σ_T)/2): the offset in units of the clouds' spread, so
  layers with growing norms can be compared;
* a subspace measure, **principal angles** between the top-k PCA subspaces of the centred clouds (k = 8 by
  default): ``subspace_distance`` = √(mean sin² θ_i) ∈ [0, 1] (0: same principal directions, 1: orthogonal) and the
  angles in degrees. CKA is not used: it needs paired samples, and audio and text tokens are not paired.

A pure offset moves the centroids but not the subspaces; a rotation moves the subspaces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from mapo.diagnostics.hidden import prompt_hidden_states
from mapo.diagnostics.output import headless_pyplot, save_figure_and_json
from mapo.modality import audio_key_mask, resolve_modality

__all__ = ["modality_gap", "modality_gap_by_layer", "modality_states", "plot_modality_gap"]


def _top_subspace(x: torch.Tensor, k: int) -> torch.Tensor:
    centred = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:k].T  # [D, k], orthonormal columns


def modality_gap(audio: torch.Tensor, text: torch.Tensor, k: int = 8) -> dict[str, Any]:
    """Gap between two clouds ``audio [Na, D]`` and ``text [Nt, D]`` (module docstring); fp64 internally."""
    a, t = audio.detach().double().cpu(), text.detach().double().cpu()
    if a.dim() != 2 or t.dim() != 2 or a.shape[1] != t.shape[1]:
        raise ValueError(
            f"audio and text must be [N, D] with the same D, got {tuple(a.shape)} and {tuple(t.shape)}"
        )
    if a.shape[0] < 2 or t.shape[0] < 2:
        raise ValueError(
            f"need at least two points per modality, got {a.shape[0]} audio and {t.shape[0]} text"
        )
    mu_a, mu_t = a.mean(0), t.mean(0)
    diff = float(torch.linalg.vector_norm(mu_a - mu_t))
    denom = float(torch.linalg.vector_norm(mu_a) * torch.linalg.vector_norm(mu_t))
    cosine = 1.0 - float(mu_a @ mu_t) / denom if denom > 0 else float("nan")
    spread = math.sqrt(max((float(a.var(0).sum()) + float(t.var(0).sum())) / 2, 0.0))
    k_eff = min(k, a.shape[0] - 1, t.shape[0] - 1, a.shape[1])
    cosines = torch.linalg.svdvals(_top_subspace(a, k_eff).T @ _top_subspace(t, k_eff)).clamp(0.0, 1.0)
    return {
        "centroid_l2": diff,
        "centroid_cosine": cosine,
        "centroid_l2_relative": diff / spread if spread > 0 else float("nan"),
        "subspace_distance": math.sqrt(max(float(1.0 - cosines.pow(2).mean()), 0.0)),
        "principal_angles_deg": [math.degrees(math.acos(float(c))) for c in cosines],
        "k": k_eff,
        "n_audio": a.shape[0],
        "n_text": t.shape[0],
    }


def modality_states(
    model: Any,
    inputs: dict[str, torch.Tensor],
    layers: Sequence[int],
    *,
    tokenizer: Any = None,
    max_tokens_per_row: int | None = 64,
    seed: int = 0,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (audio_states [Na, D], text_states [Nt, D])}`` for one batch of prompts.

    ``max_tokens_per_row`` subsamples each row's audio and text positions (uniformly, seeded) to bound memory.
    """
    spec = resolve_modality(model, tokenizer)
    ids, valid = inputs["input_ids"], inputs["attention_mask"].bool()
    audio = audio_key_mask(ids, spec)
    text = valid & ~audio_key_mask(ids, spec, include_markers=True)
    gen = torch.Generator().manual_seed(seed)

    def pick(mask: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for row in mask.cpu():
            cols = row.nonzero().flatten()
            if max_tokens_per_row is not None and len(cols) > max_tokens_per_row:
                cols = cols[torch.randperm(len(cols), generator=gen)[:max_tokens_per_row]].sort().values
            out.append(cols)
        return out

    a_cols, t_cols = pick(audio), pick(text)
    states = prompt_hidden_states(model, inputs, layers)
    result = {}
    for layer, h in states.items():
        h = h.cpu()
        result[layer] = (
            torch.cat([h[b, c] for b, c in enumerate(a_cols)]),
            torch.cat([h[b, c] for b, c in enumerate(t_cols)]),
        )
    return result


def modality_gap_by_layer(
    states: dict[int, tuple[torch.Tensor, torch.Tensor]], k: int = 8
) -> dict[int, dict]:
    """:func:`modality_gap` for every layer of :func:`modality_states` (possibly concatenated over batches)."""
    return {layer: modality_gap(a, t, k) for layer, (a, t) in sorted(states.items())}


def plot_modality_gap(result: dict[int, dict], out_dir: str, prefix: str = "modality_gap") -> dict[str, str]:
    """Relative centroid distance and subspace distance per layer; writes PNG and JSON."""
    plt = headless_pyplot()

    layers = sorted(result)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        layers,
        [result[i]["centroid_l2_relative"] for i in layers],
        marker="o",
        label="centroid distance / spread",
    )
    ax.set_xlabel("hidden-state index (0 = embeddings)")
    ax.set_ylabel("relative centroid distance")
    twin = ax.twinx()
    twin.plot(
        layers,
        [result[i]["subspace_distance"] for i in layers],
        marker="s",
        color="tab:purple",
        label="subspace distance (principal angles)",
    )
    twin.set_ylim(0.0, 1.05)
    twin.set_ylabel("subspace distance")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.set_title("Modality gap between audio-token and text-token hidden states")
    fig.tight_layout()
    return save_figure_and_json(fig, {str(layer): v for layer, v in result.items()}, out_dir, prefix)
