"""The demo's outputs: the summary table (mean ± std over seeds), ``results.json`` and the PNG plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "aggregate", "format_table", "plot_all", "write_results"]

#: (key in the evaluation dict, column header) of the summary table.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("prior/answer_acc", "acc in-prior"),
    ("trap/answer_acc", "acc trap"),
    ("trap/late_note_acc", "trap late-note acc"),
    ("trap/late_follow_prior", "trap late notes = prior"),
    ("trap/attn_early", "a_t early"),
    ("trap/attn_late", "a_t late"),
    ("trap/attn_ratio", "late/early"),
    ("trap/dh_precision_at_k", "Δh P=R@K"),
)
ROW_LABELS = {"base": "base (warmed up)", "grpo": "GRPO", "mask_only": "MAPO mask only (η=0)", "mapo": "MAPO"}


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def aggregate(per_seed: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{row: {metric: {"mean", "std", "n"}}}`` over seeds (std with ddof=1; 0 for one seed)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    rows = per_seed[0].keys()
    for row in rows:
        out[row] = {}
        for key, _ in COLUMNS:
            vals = _finite([seed[row]["metrics"].get(key) for seed in per_seed])
            if not vals:
                continue
            arr = np.asarray(vals)
            out[row][key] = {
                "mean": float(arr.mean()),
                "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                "n": len(arr),
            }
    return out


def format_table(summary: dict[str, dict[str, dict[str, float]]], n_seeds: int) -> str:
    """Plain-text table (rich renders it in the terminal; this string goes into logs and the README)."""
    head = ["model"] + [label for _, label in COLUMNS]
    lines = []
    for row, stats in summary.items():
        cells = [ROW_LABELS.get(row, row)]
        for key, _ in COLUMNS:
            s = stats.get(key)
            if s is None:
                cells.append("—")
            elif n_seeds > 1:
                cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
            else:
                cells.append(f"{s['mean']:.3f}")
        lines.append(cells)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(head), sep, *(fmt(r) for r in lines)])


def write_results(path: str, payload: dict[str, Any]) -> None:
    def clean(x):
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, np.integer)):
            return clean(x.item())
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        return x

    with open(path, "w") as fh:
        json.dump(clean(payload), fh, indent=2)


# ----------------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_curves(per_seed: Sequence[dict], path: str) -> None:
    """Trap / in-prior answer accuracy along RL (greedy, fixed subset), mean over seeds, ± std band."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, title in zip(axes, ("trap_acc", "prior_acc"), ("trap split", "in-prior split")):
        for arm in [a for a in per_seed[0] if a != "base"]:
            curves = [seed[arm]["curve"] for seed in per_seed]
            steps = [0] + [p["step"] for p in curves[0]]
            base = [
                seed["base"]["metrics"][f"{'trap' if key == 'trap_acc' else 'prior'}/answer_acc"]
                for seed in per_seed
            ]
            vals = np.array([[b] + [p[key] for p in c] for b, c in zip(base, curves)])
            mean, std = vals.mean(0), vals.std(0)
            ax.plot(steps, mean, marker="o", label=ROW_LABELS[arm])
            if len(vals) > 1:
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"answer accuracy, {title}")
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (greedy)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mass_by_position(per_seed: Sequence[dict], path: str) -> None:
    """Mean audio attention mass a_t at the k-th note token of trap items, per model (collapse = decay with k)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for row in per_seed[0]:
        profiles = [seed[row]["metrics"].get("trap/attn_note_profile") for seed in per_seed]
        profiles = [p for p in profiles if p]
        if not profiles:
            continue
        arr = np.array(profiles, dtype=float)
        ax.plot(range(1, arr.shape[1] + 1), np.nanmean(arr, 0), marker="o", label=ROW_LABELS.get(row, row))
    ax.set_xlabel("note k in the chain of thought")
    ax.set_ylabel("audio attention mass a_t")
    ax.set_title("audio attention by position (trap items)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trap_trajectory(records_by_row: dict[str, dict], tokenizer, path: str) -> None:
    """Fig. 2/6-style: per-token Δh (bars) and a_t (line) along one trap item's completion, one panel per model."""
    plt = _plt()
    rows = [r for r in records_by_row if records_by_row[r] is not None]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.4 * len(rows)), squeeze=False)
    for i, (ax, row) in enumerate(zip(axes[:, 0], rows)):
        rec = records_by_row[row]
        dh, mass, labels = np.asarray(rec["dh"]), np.asarray(rec["mass"]), np.asarray(rec["labels"])
        x = np.arange(len(dh))
        ax.bar(
            x, dh, color=np.where(labels > 0, "tab:blue", "lightsteelblue"), label="Δh (dark: note tokens)"
        )
        ax.set_ylabel("Δh (nats)")
        twin = ax.twinx()
        twin.plot(x, mass, color="tab:orange", marker=".", label="a_t (max-head)")
        twin.set_ylim(0, 1)
        twin.set_ylabel("a_t")
        ok = "right" if rec["answer"] == rec["row"]["answer"] else "wrong"
        ax.set_title(
            f"{ROW_LABELS.get(row, row)}: notes {' '.join(rec['notes'])} → answer {rec['answer']} ({ok}; "
            f"truth {' '.join(rec['row']['notes'])})",
            fontsize=9,
        )
        if i == 0:
            bars, lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
            ax.legend(bars[0] + lines[0], bars[1] + lines[1], fontsize=8, loc="upper right")
    from matplotlib.ticker import MaxNLocator

    for ax in axes[:, 0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("completion token index t")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_all(per_seed: Sequence[dict], trajectories: dict[str, dict], tokenizer, out_dir: str) -> list[str]:
    paths = [
        os.path.join(out_dir, "accuracy_curves.png"),
        os.path.join(out_dir, "audio_mass_by_position.png"),
        os.path.join(out_dir, "trap_example_trajectory.png"),
    ]
    plot_accuracy_curves(per_seed, paths[0])
    plot_mass_by_position(per_seed, paths[1])
    plot_trap_trajectory(trajectories, tokenizer, paths[2])
    return paths
