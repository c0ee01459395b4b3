"""The demo's outputs: the summary table (mean ± std over seeds), ``results.json`` and the PNG plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "COLUMNS",
    "EXTRA_METRICS",
    "aggregate",
    "check_criteria",
    "comparison",
    "format_table",
    "interpretation",
    "paired_differences",
    "plot_all",
    "plot_summary",
    "write_results",
]

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
        for key in [k for k, _ in COLUMNS] + list(EXTRA_METRICS):
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
        os.path.join(out_dir, "summary.png"),
        os.path.join(out_dir, "accuracy_curves.png"),
        os.path.join(out_dir, "audio_mass_by_position.png"),
        os.path.join(out_dir, "trap_example_trajectory.png"),
    ]
    plot_summary(per_seed, paths[0])
    plot_accuracy_curves(per_seed, paths[1])
    plot_mass_by_position(per_seed, paths[2])
    plot_trap_trajectory(trajectories, tokenizer, paths[3])
    return paths


# ----------------------------------------------------------------------------------------------------------------
# The acceptance criteria, the paired comparison, the interpretation and the summary figure
# ----------------------------------------------------------------------------------------------------------------

#: Metrics aggregated beside :data:`COLUMNS` in ``summary`` (not shown in the table).
EXTRA_METRICS: tuple[str, ...] = (
    "prior/format_ok",
    "trap/format_ok",
    "prior/late_note_acc",
    "trap/early_note_acc",
)


def paired_differences(per_seed: Sequence[dict], a: str, b: str, key: str) -> dict[str, Any]:
    """``a − b`` on ``key`` per seed, with mean, std (ddof 1), standard error and the count of positive seeds."""
    diffs = [
        float(s[a]["metrics"][key] - s[b]["metrics"][key])
        for s in per_seed
        if a in s and b in s and s[a]["metrics"].get(key) is not None and s[b]["metrics"].get(key) is not None
    ]
    arr = np.asarray(diffs, dtype=float)
    n = len(arr)
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    return {
        "per_seed": diffs,
        "mean": float(arr.mean()) if n else float("nan"),
        "std": std,
        "sem": std / math.sqrt(n) if n > 1 else float("nan"),
        "n": n,
        "positive": int((arr > 0).sum()),
    }


def check_criteria(per_seed: Sequence[dict], first_seed: int = 0) -> dict[str, Any]:
    """Per seed, the demo's claims as booleans with the numbers behind them (issue thresholds).

    * collapse in the base: trap late/early a_t ≤ 0.75 and ≥ 50 % of late trap notes following the prior;
    * every RL arm: in-prior answer accuracy ≥ base − 0.05 and ≥ 95 % well-formed completions (both splits);
    * MAPO vs GRPO: trap late a_t ≥ 1.3 × GRPO's and trap late/early ≥ GRPO's + 0.15.
    """
    out: dict[str, Any] = {"per_seed": [], "all": {}}
    for i, s in enumerate(per_seed):
        base = s["base"]["metrics"]
        row: dict[str, Any] = {"seed": first_seed + i}
        row["base_collapsed"] = bool(
            base["trap/attn_ratio"] <= 0.75 and base["trap/late_follow_prior"] >= 0.5
        )
        for arm in [a for a in s if a != "base"]:
            m = s[arm]["metrics"]
            row[f"{arm}_keeps_prior"] = bool(m["prior/answer_acc"] >= base["prior/answer_acc"] - 0.05)
            row[f"{arm}_well_formed"] = bool(min(m["prior/format_ok"], m["trap/format_ok"]) >= 0.95)
        if "mapo" in s and "grpo" in s:
            mapo, grpo = s["mapo"]["metrics"], s["grpo"]["metrics"]
            row["mapo_late_mass_x_grpo"] = float(mapo["trap/attn_late"] / max(grpo["trap/attn_late"], 1e-12))
            row["mapo_late_mass_ok"] = bool(row["mapo_late_mass_x_grpo"] >= 1.3)
            row["mapo_ratio_minus_grpo"] = float(mapo["trap/attn_ratio"] - grpo["trap/attn_ratio"])
            row["mapo_ratio_ok"] = bool(row["mapo_ratio_minus_grpo"] >= 0.15)
        out["per_seed"].append(row)
    flags = sorted({k for r in out["per_seed"] for k, v in r.items() if isinstance(v, bool)})
    out["all"] = {k: all(r.get(k, False) for r in out["per_seed"]) for k in flags}
    return out


def comparison(per_seed: Sequence[dict]) -> dict[str, Any]:
    """MAPO − GRPO (and mask-only − GRPO) per seed on the accuracy and attention figures of the trap split."""
    keys = ("trap/answer_acc", "trap/late_note_acc", "trap/attn_late", "trap/attn_ratio", "prior/answer_acc")
    out: dict[str, Any] = {}
    for arm in ("mapo", "mask_only"):
        if all(arm in s and "grpo" in s for s in per_seed):
            out[f"{arm}_minus_grpo"] = {k: paired_differences(per_seed, arm, "grpo", k) for k in keys}
    return out


def _noise_word(d: dict[str, Any]) -> str:
    """'beyond seed noise' when the paired mean is more than two standard errors from 0, else 'within'."""
    if d["n"] < 2 or not math.isfinite(d["sem"]) or d["sem"] == 0:
        return "one seed, so seed noise is unknown" if d["n"] < 2 else "identical on every seed"
    return "beyond seed noise (> 2 standard errors)" if abs(d["mean"]) > 2 * d["sem"] else "within seed noise"


def interpretation(summary: dict, per_seed: Sequence[dict]) -> list[str]:
    """Two to four sentences computed from the numbers: collapse, attention, accuracy, in-prior accuracy."""
    n = len(per_seed)
    mean = lambda row, key: summary[row][key]["mean"]  # noqa: E731
    lines = []
    base_profile = np.nanmean(
        [s["base"]["metrics"]["trap/attn_note_profile"] for s in per_seed], axis=0
    ).tolist()
    lines.append(
        f"The warmed-up model {'collapses' if mean('base', 'trap/attn_ratio') <= 0.75 else 'only partly collapses'}"
        f": on trap items its audio mass falls from {base_profile[0]:.2f} at note 1 to {base_profile[-1]:.2f} at "
        f"note {len(base_profile)} (late/early {mean('base', 'trap/attn_ratio'):.2f}) and "
        f"{100 * mean('base', 'trap/late_follow_prior'):.0f} % of its late trap notes follow the prior."
    )
    if "mapo" in summary and "grpo" in summary:
        ratio = mean("mapo", "trap/attn_late") / max(mean("grpo", "trap/attn_late"), 1e-12)
        verb = "keeps more" if ratio > 1 else "does not keep more"
        lines.append(
            f"MAPO {verb} audio attention late in the chain than GRPO: late a_t {mean('mapo', 'trap/attn_late'):.2f}"
            f" vs {mean('grpo', 'trap/attn_late'):.2f} ({ratio:.2f}×), late/early "
            f"{mean('mapo', 'trap/attn_ratio'):.2f} vs {mean('grpo', 'trap/attn_ratio'):.2f}."
        )
        cmp = comparison(per_seed)["mapo_minus_grpo"]
        acc, late = cmp["trap/answer_acc"], cmp["trap/late_note_acc"]

        def part(name: str, d: dict) -> str:
            sign = "higher" if d["mean"] > 0 else "lower" if d["mean"] < 0 else "equal"
            return (
                f"{name} {d['mean']:+.3f} ({sign}; {d['positive']}/{d['n']} seeds positive, {_noise_word(d)})"
            )

        lines.append(
            f"Paired over {n} seed{'s' if n > 1 else ''}, MAPO − GRPO on trap items: "
            f"{part('answer accuracy', acc)}, {part('late-note accuracy', late)}."
        )
    arms = [a for a in summary if a != "base"]
    drops = {a: mean(a, "prior/answer_acc") - mean("base", "prior/answer_acc") for a in arms}
    worst = min(drops, key=drops.get) if drops else None
    if worst is not None:
        lines.append(
            f"In-prior accuracy: base {mean('base', 'prior/answer_acc'):.2f}, "
            + ", ".join(f"{ROW_LABELS.get(a, a)} {mean(a, 'prior/answer_acc'):.2f}" for a in arms)
            + (
                " — no RL arm lost in-prior accuracy beyond 0.05."
                if drops[worst] >= -0.05
                else f" — {ROW_LABELS.get(worst, worst)} lost {-drops[worst]:.2f}."
            )
        )
    return lines


def plot_summary(per_seed: Sequence[dict], path: str) -> None:
    """One figure: audio mass by note position (trap; base / GRPO / MAPO; thin lines = seeds) and trap
    late-note accuracy per model with one point per seed."""
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.3, 1]})
    colours = {"base": "tab:gray", "grpo": "tab:blue", "mask_only": "tab:green", "mapo": "tab:red"}
    for row in ("base", "grpo", "mapo"):
        if row not in per_seed[0]:
            continue
        arr = np.array([s[row]["metrics"]["trap/attn_note_profile"] for s in per_seed], dtype=float)
        x = np.arange(1, arr.shape[1] + 1)
        for prof in arr:
            ax0.plot(x, prof, color=colours[row], alpha=0.25, lw=1)
        ax0.plot(x, np.nanmean(arr, 0), color=colours[row], marker="o", lw=2.2, label=ROW_LABELS[row])
    ax0.set_xlabel("note k in the chain of thought (trap items; notes 5-6 break the pattern)")
    ax0.set_ylabel("audio attention mass a_t")
    ax0.set_ylim(0, 1.02)
    ax0.set_title("audio attention along the chain")
    ax0.grid(alpha=0.3)
    ax0.legend(fontsize=8)
    rows = [r for r in ("base", "grpo", "mask_only", "mapo") if r in per_seed[0]]
    rng = np.random.default_rng(0)  # jitter only
    for i, row in enumerate(rows):
        vals = np.array([s[row]["metrics"]["trap/late_note_acc"] for s in per_seed], dtype=float)
        ax1.bar(i, np.nanmean(vals), color=colours[row], alpha=0.35)
        ax1.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, color=colours[row], s=18, zorder=3)
    ax1.set_xticks(range(len(rows)), [ROW_LABELS[r].replace(" (η=0)", "\n(η=0)") for r in rows], fontsize=8)
    ax1.set_ylabel("late-note accuracy (notes 5-6, trap)")
    ax1.set_ylim(0, 1.02)
    ax1.set_title(
        f"chain faithfulness on trap items ({len(per_seed)} seed{'s' if len(per_seed) > 1 else ''})"
    )
    ax1.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
