"""POS entropy summary (paper appendix E, Fig. 7): mean text-only entropy and mean Δh per coarse POS tag.

Tags come from :func:`mapo.pos_gate.pos_tags` (the gate's own word segmentation and tagger, ``"lexicon"`` or
``"nltk"``), one coarse tag per completion token; tokens that belong to no word (punctuation, whitespace, special
tokens) are reported under :data:`NO_WORD`. The paper's gate targets {NOUN, VERB, ADJ, ADV, NUM, X} are marked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mapo.diagnostics.output import headless_pyplot, save_figure_and_json
from mapo.pos_gate import DEFAULT_TARGET_TAGS, pos_tags

__all__ = ["NO_WORD", "plot_pos_entropy", "pos_entropy_summary", "summarize_by_tag"]

#: Label of tokens outside any word (pos_tags returns None for them).
NO_WORD = "PUNCT/SPECIAL"


def summarize_by_tag(
    tags: Sequence[Sequence[str | None]],
    text_entropy: Sequence[Sequence[float]],
    delta_h: Sequence[Sequence[float]],
) -> dict[str, dict[str, float]]:
    """Per tag: ``n`` tokens, mean ``text_entropy``, mean ``delta_h`` and mean ``abs_delta_h``, over all sequences.

    The three inputs are per-sequence lists of equal lengths (completion tokens only). Tags are sorted by mean
    text-only entropy, highest first (the order of Fig. 7).
    """
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for i, (seq_tags, h, dh) in enumerate(zip(tags, text_entropy, delta_h, strict=True)):
        if not len(seq_tags) == len(h) == len(dh):
            raise ValueError(f"sequence {i}: {len(seq_tags)} tags, {len(h)} entropies, {len(dh)} Δh values")
        for tag, ht, d in zip(seq_tags, h, dh):
            cell = acc[tag if tag is not None else NO_WORD]
            cell[0] += 1
            cell[1] += float(ht)
            cell[2] += float(d)
            cell[3] += abs(float(d))
    out = {
        tag: {"n": int(n), "text_entropy": s_h / n, "delta_h": s_d / n, "abs_delta_h": s_a / n}
        for tag, (n, s_h, s_d, s_a) in acc.items()
    }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["text_entropy"]))


def pos_entropy_summary(
    trajectories: Sequence[Any], tokenizer: Any, tagger: Any = "lexicon"
) -> dict[str, Any]:
    """Fig. 7's numbers from :class:`~mapo.diagnostics.trajectory.Trajectory` s (their token ids are tagged)."""
    tags = [pos_tags(t.token_ids, tokenizer, tagger=tagger) for t in trajectories]
    per_tag = summarize_by_tag(
        tags, [t.text_entropy for t in trajectories], [t.delta_h for t in trajectories]
    )
    name = tagger if isinstance(tagger, str) else getattr(tagger, "name", type(tagger).__name__)
    return {
        "tagger": name,
        "n_sequences": len(trajectories),
        "target_tags": list(DEFAULT_TARGET_TAGS),
        "per_tag": per_tag,
    }


def plot_pos_entropy(summary: dict[str, Any], out_dir: str, prefix: str = "pos_entropy") -> dict[str, str]:
    """Two-panel bar chart (top: mean text-only entropy, bottom: mean Δh) per tag; writes PNG and JSON."""
    plt = headless_pyplot()

    per_tag = summary["per_tag"]
    tags = list(per_tag)
    colors = ["tab:blue" if t in summary["target_tags"] else "tab:gray" for t in tags]
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(tags) + 2), 6), sharex=True)
    axes[0].bar(tags, [per_tag[t]["text_entropy"] for t in tags], color=colors)
    axes[0].set_ylabel("mean text-only entropy")
    axes[1].bar(tags, [per_tag[t]["delta_h"] for t in tags], color=colors)
    axes[1].axhline(0.0, color="black", linewidth=0.5)
    axes[1].set_ylabel("mean Δh")
    for ax in axes:
        for i, t in enumerate(tags):
            ax.annotate(f"n={per_tag[t]['n']}", (i, 0), ha="center", va="bottom", fontsize=6, color="black")
    axes[1].tick_params(axis="x", rotation=45)
    fig.suptitle(f"POS entropy summary ({summary['tagger']} tagger; blue = POS-gate targets)")
    fig.tight_layout()
    return save_figure_and_json(fig, summary, out_dir, prefix)
