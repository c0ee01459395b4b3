"""Per-token trajectories along a generated reasoning, plotted like the paper's Fig. 2 and Fig. 6.

Top panel (Fig. 2a): text-only entropy H(π_text-ref) as bars; bottom panel (Fig. 2b / Fig. 6): Δh_t as bars. Both
panels overlay the audio attention mass on a second axis: max-head (solid orange) and mean-head (dashed orange).
The plotted numbers are exactly those of :class:`Trajectory`, which is also written as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from mapo.diagnostics.output import headless_pyplot
from mapo.diagnostics.signals import TokenSignals

__all__ = ["Trajectory", "plot_trajectory", "trajectories_from_signals", "write_trajectories"]


@dataclass
class Trajectory:
    """One completion's per-token signals (length T = its number of completion tokens)."""

    id: str
    tokens: list[str]
    token_ids: list[int]
    mass_max: list[float]
    mass_mean: list[float]
    entropy: list[float]
    text_entropy: list[float]
    delta_h: list[float]
    text: str = ""

    def __len__(self) -> int:
        return len(self.token_ids)

    def summary(self) -> dict[str, float]:
        """Means over the first and last third of the tokens (the collapse of §3.2 shows as last < first)."""
        n = len(self)
        third = max(n // 3, 1)

        def mean(values: list[float], part: slice) -> float:
            chunk = values[part]
            return float(sum(chunk) / len(chunk)) if chunk else float("nan")

        out = {"length": float(n)}
        for name in ("mass_max", "mass_mean", "delta_h", "text_entropy"):
            values = getattr(self, name)
            out[f"{name}/first_third"] = mean(values, slice(0, third))
            out[f"{name}/last_third"] = mean(values, slice(n - third, n))
        return out


def trajectories_from_signals(
    signals: TokenSignals, tokenizer: Any, ids: list[str] | None = None
) -> list[Trajectory]:
    """Split :class:`TokenSignals` into one :class:`Trajectory` per row (completion tokens only)."""
    out = []
    for b in range(signals.completion_ids.shape[0]):
        keep = signals.completion_mask[b].bool()
        token_ids = signals.completion_ids[b][keep].tolist()

        def row(t, b=b, keep=keep):
            return [float(v) for v in t[b][keep].tolist()]

        out.append(
            Trajectory(
                id=ids[b] if ids else str(b),
                tokens=[tokenizer.decode([t]) for t in token_ids],
                token_ids=token_ids,
                mass_max=row(signals.mass_max),
                mass_mean=row(signals.mass_mean),
                entropy=row(signals.entropy),
                text_entropy=row(signals.text_entropy),
                delta_h=row(signals.delta_h),
                text=tokenizer.decode(token_ids),
            )
        )
    return out


def plot_trajectory(traj: Trajectory, path: str, title: str | None = None, label_tokens: int = 60) -> str:
    """Write the two-panel trajectory figure of ``traj`` to ``path`` (PNG); returns ``path``.

    Token strings label the x axis when the completion has at most ``label_tokens`` tokens.
    """
    plt = headless_pyplot()

    x = list(range(1, len(traj) + 1))
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, min(0.18 * len(traj), 24.0)), 6.5), sharex=True)
    panels = (
        (axes[0], traj.text_entropy, "text-only entropy H(π_text-ref)", "tab:gray"),
        (axes[1], traj.delta_h, "Δh = H_text − H_policy", "tab:blue"),
    )
    for ax, values, name, color in panels:
        ax.bar(x, values, color=color, alpha=0.6, width=0.9, label=name)
        ax.set_ylabel(name.split(" =")[0].split(" H(")[0])
        ax.axhline(0.0, color="black", linewidth=0.5)
        twin = ax.twinx()
        twin.plot(x, traj.mass_max, color="tab:orange", linewidth=1.6, label="audio mass (max-head)")
        twin.plot(
            x,
            traj.mass_mean,
            color="tab:orange",
            linewidth=1.2,
            linestyle="--",
            label="audio mass (mean-head)",
        )
        twin.set_ylim(0.0, max([*traj.mass_max, 1e-3]) * 1.1)
        twin.set_ylabel("audio attention mass")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=8)
    axes[1].set_xlabel("generated token t")
    if len(traj) <= label_tokens:
        axes[1].set_xticks(x)
        labels = ["".join(c if c.isprintable() else "·" for c in t.replace("\n", "⏎")) for t in traj.tokens]
        axes[1].set_xticklabels(labels, rotation=90, fontsize=7)
    fig.suptitle(title or f"item {traj.id}: audio attention mass and Δh along the completion")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_trajectories(trajs: list[Trajectory], out_dir: str, prefix: str = "trajectory") -> dict[str, Any]:
    """One PNG per trajectory plus ``{prefix}.json`` with every plotted number; returns the JSON payload."""
    os.makedirs(out_dir, exist_ok=True)
    payload: dict[str, Any] = {"trajectories": [], "figures": []}
    for i, traj in enumerate(trajs):
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in traj.id)[:60] or str(i)
        payload["figures"].append(
            plot_trajectory(traj, os.path.join(out_dir, f"{prefix}_{i:03d}_{safe}.png"))
        )
        payload["trajectories"].append({**asdict(traj), "summary": traj.summary()})
    with open(os.path.join(out_dir, f"{prefix}.json"), "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, ensure_ascii=False)
    return payload
