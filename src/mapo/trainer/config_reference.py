"""The ``MAPOConfig`` parameter reference: one row per field MAPO adds or whose default it changes.

The meaning of a row is the field's own help text (what ``mapo train --help`` prints); the paper symbol and the
accepted range are kept here. ``docs/training.md`` holds the generated table between two marker lines;
``python -m mapo.trainer.config_reference --write docs/training.md`` regenerates it and ``tests/trainer/
test_config_reference.py`` fails when the page, this table or ``MAPOConfig`` disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from trl import GRPOConfig

from .config import MAPOConfig

BEGIN = "<!-- BEGIN MAPOConfig reference (generated: python -m mapo.trainer.config_reference --write docs/training.md) -->"
END = "<!-- END MAPOConfig reference -->"

#: field -> (paper symbol, accepted range). Every field MAPOConfig declares itself has a row.
SYMBOLS: dict[str, tuple[str, str]] = {
    "loss_type": ("eq. 2", "'grpo' (others need allow_non_grpo_loss)"),
    "beta": ("β (eq. 5)", "≥ 0"),
    "temperature": ("rollout T (Table 5)", "> 0"),
    "top_k": ("top-k (Table 5)", "≥ 0 (0 = off)"),
    "top_p": ("top-p (Table 5)", "(0, 1]"),
    "use_bias_correction_kl": ("—", "bool"),
    "eta": ("η (eq. 5)", "≥ 0 (0 = mask-only ablation)"),
    "use_relevance_mask": ("ω̃ (eq. 1-2)", "bool"),
    "tau_base": ("τ_base (eq. 1, 3)", "> 0"),
    "mask_clip": ("C_mask (eq. 1, 3)", "> 0"),
    "kappa": ("κ (eq. 4)", "≥ 0"),
    "fail_gate_floor": ("α (eq. 4)", "[0, 1]"),
    "fail_threshold": ("θ_fail (eq. 4)", "any"),
    "advantage_floor": ("ε advantage floor (eq. 4, Table 5)", "≥ 0"),
    "prefactor_clip": ("C_pref (eq. 4)", "> 0"),
    "log_eps": ("ε in −log(a_t + ε) (eq. 4)", "> 0"),
    "target_layers": ("L_tgt (§3.2)", "distinct layer indices in [0, decoder depth)"),
    "head_reduce": ("max over heads (§3.2)", "'max', 'mean'"),
    "layer_reduce": ("mean over L_tgt (§3.2)", "'mean', 'max'"),
    "include_audio_markers": ("S_audio (§3.2)", "bool"),
    "pos_tags": ("g^pos (appendix E)", "coarse tags, at least one"),
    "pos_tagger": ("g^pos (appendix E)", "'nltk', 'lexicon'"),
    "accuracy_reward_name": ("r_acc (eq. 4)", "a reward function's name"),
    "text_only_mode": ("x_text (§3.3)", "'drop', 'keep_placeholders'"),
    "text_reference": ("π_text-ref (§3.3)", "'frozen', 'policy'"),
    "text_reference_model": ("π_text-ref (§3.3)", "path or None"),
    "attention_only": ("—", "bool (needs η > 0)"),
    "allow_non_grpo_loss": ("—", "bool"),
    "vllm_weight_sync": ("—", "'auto', 'nccl', 'reload'"),
    "vllm_sync_dir": ("—", "directory or null"),
    "vllm_drift_tolerance": ("—", "> 0 nats, or null (off)"),
    "vllm_llm_kwargs": ("—", "dict / JSON"),
    "attention_layers": ("L_tgt", "deprecated name of target_layers"),
    "reward_nan_policy": ("— (missing r_k in eq. 6)", "'impute', 'exclude', 'error'"),
    "audio_canary": ("—", "bool"),
    "audio_canary_rows": ("—", "≥ 1"),
    "audio_canary_min_influence": ("—", "≥ 0"),
}


def mapo_fields() -> list[dataclasses.Field]:
    """The fields MAPOConfig declares itself (new ones and GRPOConfig fields with the paper's defaults), in order."""
    own = MAPOConfig.__dict__.get("__annotations__", {})
    return [f for f in dataclasses.fields(MAPOConfig) if f.name in own]


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if f.name in {g.name for g in dataclasses.fields(GRPOConfig)}:
        trl_default = next(g for g in dataclasses.fields(GRPOConfig) if g.name == f.name).default
        return f"`{value!r}` (TRL: `{trl_default!r}`)"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The markdown table, between the BEGIN and END marker lines."""
    rows = [BEGIN, "", "| field | paper symbol | default | range | meaning |", "|---|---|---|---|---|"]
    for f in mapo_fields():
        symbol, accepted = SYMBOLS[f.name]
        help_text = f.metadata.get("help", "")
        rows.append(
            f"| `{f.name}` | {_cell(symbol)} | {_default(f)} | {_cell(accepted)} | {_cell(help_text)} |"
        )
    return "\n".join([*rows, "", END])


def replace_in(page: str) -> str:
    """``page`` with the text between the marker lines replaced by :func:`render`."""
    if BEGIN not in page or END not in page:
        raise ValueError(f"the page has no generated MAPOConfig table: add the two lines\n{BEGIN}\n{END}")
    head, rest = page.split(BEGIN, 1)
    return head + render() + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mapo.trainer.config_reference", description=__doc__)
    parser.add_argument(
        "--write", metavar="PAGE", help="replace the table inside PAGE (else print the table)"
    )
    args = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(replace_in(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
