"""Inference-time local evidence masking and Attention Causal Selectivity (paper appendix C.4, eq. 17, Table 4).

Per multiple-choice item:

1. Generate with the intact audio (greedy) and re-score teacher-forced to get the attention of every completion
   token to every audio key (:func:`mapo.probe.audio_key_attention`; mean over heads by
   default, mean over the target layers). Summed over the completion tokens this is the item's attention weight
   per audio token ("the token-to-audio attention map aggregated during generation").
2. Audio tokens are grouped into regions of ``region_tokens`` consecutive tokens (weight = sum) and mapped back to
   mel frames by proportion: token k of n covers frames [⌊kF/n⌋, ⌊(k+1)F/n⌋) of the F valid frames. For the
   Whisper-style encoders of Qwen2-Audio / Qwen-Omni (conv stride 2, then pooling 2) one token is 4 frames = 40 ms,
   so this is exact up to rounding at the end of the clip.
3. For each ratio r, k = max(1, round(r·R)) of the R regions are masked: the top-attended (``top``), the
   lowest-attended (``low``) and ``n_random`` uniformly drawn sets of the same size (``random``: duration-matched).
   Masking (``domain="waveform"``, default) zeroes the corresponding samples (frames × hop length) and re-extracts
   the features, i.e. the region becomes silence; ``domain="features"`` instead sets those mel frames to the clip's
   minimum feature value (the log-mel floor) without re-extraction.
4. Re-generate, score with the accuracy reward's rules, and report Acc_top, Acc_rand, Acc_low per ratio and
   ACS(r) = Acc_rand(r) − Acc_top(r).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mapo.diagnostics.output import headless_pyplot, save_figure_and_json
from mapo.diagnostics.signals import completion_key_attention, split_rows
from mapo.eval.items import EvalItem
from mapo.eval.runner import (
    GenerationSettings,
    decode_completions,
    encode_prompts,
    generate_batch,
)
from mapo.eval.scoring import match_choice

__all__ = [
    "DEFAULT_RATIOS",
    "MODES",
    "acs_table",
    "evidence_masking",
    "frame_edges",
    "mask_waveform",
    "plot_acs",
    "region_weights",
    "select_regions",
]

DEFAULT_RATIOS: tuple[float, ...] = (0.05, 0.10, 0.30, 0.50)
MODES: tuple[str, ...] = ("top", "random", "low")


def frame_edges(n_tokens: int, n_frames: int) -> np.ndarray:
    """``[n_tokens + 1]`` frame boundaries: token k covers frames ``edges[k]:edges[k+1]`` (proportional map)."""
    if n_tokens < 1 or n_frames < 1:
        raise ValueError(
            f"need at least one audio token and one frame, got {n_tokens} tokens, {n_frames} frames"
        )
    return np.floor(np.arange(n_tokens + 1) * n_frames / n_tokens).astype(int)


def region_weights(weights: np.ndarray, region_tokens: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sum per-token weights over regions of ``region_tokens`` consecutive tokens; returns (weights, token spans)."""
    if region_tokens < 1:
        raise ValueError(f"region_tokens must be >= 1, got {region_tokens}")
    spans = [(s, min(s + region_tokens, len(weights))) for s in range(0, len(weights), region_tokens)]
    return np.array([weights[a:b].sum() for a, b in spans]), spans


def select_regions(weights: np.ndarray, ratio: float, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Indices of the regions to mask: ``max(1, round(ratio·R))`` highest ("top"), lowest ("low") or random."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"masking ratio must be in (0, 1], got {ratio}")
    n = len(weights)
    k = min(n, max(1, int(round(ratio * n))))
    if mode == "top":
        return np.argsort(-weights, kind="stable")[:k]
    if mode == "low":
        return np.argsort(weights, kind="stable")[:k]
    if mode == "random":
        return rng.choice(n, size=k, replace=False)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def mask_waveform(wave: np.ndarray, frame_spans: Sequence[tuple[int, int]], hop_length: int) -> np.ndarray:
    """A copy of ``wave`` with the samples of the given mel-frame spans set to 0 (silence)."""
    out = np.array(wave, dtype=np.float32, copy=True)
    for f0, f1 in frame_spans:
        out[f0 * hop_length : f1 * hop_length] = 0.0
    return out


def _frame_spans(
    chosen: np.ndarray, spans: list[tuple[int, int]], edges: np.ndarray
) -> list[tuple[int, int]]:
    return [(int(edges[spans[r][0]]), int(edges[spans[r][1]])) for r in sorted(chosen.tolist())]


def acs_table(records: Sequence[dict[str, Any]], ratios: Sequence[float]) -> list[dict[str, Any]]:
    """Rows of Table 4: per ratio, accuracy under top / random / low masks and ACS = random − top.

    ``records`` are per-item dicts with ``results[(ratio, mode)]`` = list of 0/1 outcomes (several for random).
    """
    rows = []
    for r in ratios:
        cell: dict[str, Any] = {"ratio": r, "n_items": len(records)}
        for mode in MODES:
            per_item = [float(np.mean(rec["results"][(r, mode)])) for rec in records]
            cell[mode] = float(np.mean(per_item)) if per_item else None
        cell["acs"] = None if cell["top"] is None else cell["random"] - cell["top"]
        fracs = [rec["masked_fraction"][r] for rec in records]
        cell["masked_fraction"] = float(np.mean(fracs)) if fracs else None
        rows.append(cell)
    return rows


@torch.no_grad()
def evidence_masking(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    settings: GenerationSettings | None = None,
    n_random: int = 1,
    region_tokens: int = 1,
    domain: str = "waveform",
    target_layers: Sequence[int] | None = None,
    head_reduce: str = "mean",
    answer_match: str = "exact",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the masking experiment (module docstring) on the single-clip multiple-choice ``items``.

    Returns ``{"table": acs_table rows, "unmasked_accuracy", "items": per-item outcomes, "skipped", "settings"}``.
    """
    from tqdm.auto import tqdm

    if domain not in ("waveform", "features"):
        raise ValueError(f"domain must be 'waveform' or 'features', got {domain!r}")
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    settings = settings or GenerationSettings(max_new_tokens=1024)
    rng = np.random.default_rng(seed)
    hop = int(processor.feature_extractor.hop_length)
    usable, skipped = [], defaultdict(int)
    for it in items:
        if it.kind != "choice" or it.invalid:
            skipped["not a valid multiple-choice item"] += 1
        elif len(it.audio) != 1:
            skipped["several audio clips"] += 1
        else:
            usable.append(it)
    if not usable:
        raise ValueError(f"no usable items for evidence masking (skipped: {dict(skipped)})")

    records: list[dict[str, Any]] = []
    variants: list[tuple[int, float, str, list[np.ndarray], list[tuple[int, int]]]] = []
    bar = tqdm(total=len(usable), desc="attention maps", unit="item", disable=not progress)
    for start in range(0, len(usable), settings.batch_size):
        batch = encode_prompts(model, processor, usable[start : start + settings.batch_size], settings)
        ids, mask = generate_batch(model, processor, batch, settings)
        texts = decode_completions(model, processor, ids, mask)
        for b, (row, cid, cm) in enumerate(split_rows(batch.inputs, ids, mask)):
            it = batch.items[b]
            # Only the per-key map is needed here: one forward, no entropies or text-only reference.
            key_attention, _, audio_valid = completion_key_attention(
                model,
                row,
                cid,
                cm,
                tokenizer=processor.tokenizer,
                target_layers=target_layers,
                head_reduce=head_reduce,
            )
            n_tok = int(audio_valid[0].sum())
            weights = key_attention[0, :, :n_tok].sum(dim=0).double().cpu().numpy()
            fam = row.get("feature_attention_mask")
            n_frames = int(fam[0].sum()) if fam is not None else int(row["input_features"].shape[-1])
            edges = frame_edges(n_tok, n_frames)
            rw, spans = region_weights(weights, region_tokens)
            idx = len(records)
            records.append(
                {
                    "id": it.id,
                    "item": it,
                    "clip": batch.clips[b][0],
                    "n_audio_tokens": n_tok,
                    "n_regions": len(spans),
                    "unmasked": float(match_choice(texts[b], it.answer, it.choices, answer_match)),
                    "results": defaultdict(list),
                    "masked_fraction": {},
                }
            )
            for r in ratios:
                for mode in MODES:
                    for _ in range(n_random if mode == "random" else 1):
                        chosen = select_regions(rw, r, mode, rng)
                        fspans = _frame_spans(chosen, spans, edges)
                        clip = batch.clips[b][0]
                        if domain == "waveform":
                            clip = mask_waveform(clip, fspans, hop)
                        variants.append((idx, r, mode, [clip], fspans))
                        if mode == "top":  # all modes mask the same number of regions
                            records[idx]["masked_fraction"][r] = sum(f1 - f0 for f0, f1 in fspans) / n_frames
        bar.update(len(batch.items))
    bar.close()

    bar = tqdm(total=len(variants), desc="masked generations", unit="gen", disable=not progress)
    for start in range(0, len(variants), settings.batch_size):
        chunk = variants[start : start + settings.batch_size]
        batch = encode_prompts(
            model, processor, [records[v[0]]["item"] for v in chunk], settings, [v[3] for v in chunk]
        )
        if domain == "features":
            feats, fam = batch.inputs["input_features"], batch.inputs.get("feature_attention_mask")
            for b, (_, _, _, _, fspans) in enumerate(chunk):
                valid = int(fam[b].sum()) if fam is not None else feats.shape[-1]
                floor = feats[b, :, :valid].min()
                for f0, f1 in fspans:
                    feats[b, :, f0:f1] = floor
        ids, mask = generate_batch(model, processor, batch, settings)
        for (idx, r, mode, _, _), text in zip(chunk, decode_completions(model, processor, ids, mask)):
            it = records[idx]["item"]
            records[idx]["results"][(r, mode)].append(
                float(match_choice(text, it.answer, it.choices, answer_match))
            )
        bar.update(len(chunk))
    bar.close()

    return {
        "table": acs_table(records, ratios),
        "unmasked_accuracy": float(np.mean([rec["unmasked"] for rec in records])),
        "items": [
            {
                "id": rec["id"],
                "n_audio_tokens": rec["n_audio_tokens"],
                "n_regions": rec["n_regions"],
                "unmasked": rec["unmasked"],
                "results": {f"{r}/{m}": v for (r, m), v in sorted(rec["results"].items())},
            }
            for rec in records
        ],
        "skipped": dict(skipped),
        "settings": {
            "ratios": list(ratios),
            "n_random": n_random,
            "region_tokens": region_tokens,
            "domain": domain,
            "head_reduce": head_reduce,
            "target_layers": None if target_layers is None else list(target_layers),
            "seed": seed,
            "max_new_tokens": settings.max_new_tokens,
            "answer_match": answer_match,
        },
    }


def plot_acs(result: dict[str, Any], out_dir: str, prefix: str = "evidence_masking") -> dict[str, str]:
    """Accuracy vs masking ratio (top / random / low) with ACS bars; writes PNG and JSON (Table 4's numbers)."""
    plt = headless_pyplot()

    table = result["table"]
    ratios = [100 * row["ratio"] for row in table]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"top": ("tab:red", "o"), "random": ("tab:gray", "s"), "low": ("tab:green", "^")}
    for mode, (color, marker) in styles.items():
        ax.plot(
            ratios, [row[mode] for row in table], color=color, marker=marker, label=f"{mode}-mask accuracy"
        )
    ax.axhline(result["unmasked_accuracy"], color="black", linestyle=":", label="unmasked accuracy")
    ax.set_xlabel("masking ratio (%)")
    ax.set_ylabel("accuracy")
    twin = ax.twinx()
    width = 0.25 * (min(np.diff(ratios)) if len(ratios) > 1 else 10.0)
    twin.bar(ratios, [row["acs"] for row in table], width=width, alpha=0.3, color="tab:blue", label="ACS")
    twin.axhline(0.0, color="tab:blue", linewidth=0.5)
    twin.set_ylabel("ACS = Acc_rand − Acc_top")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.set_title(f"Evidence masking ({len(result['items'])} items)")
    fig.tight_layout()
    return save_figure_and_json(fig, result, out_dir, prefix)
