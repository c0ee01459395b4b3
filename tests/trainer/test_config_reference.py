"""The MAPOConfig parameter reference in docs/training.md is the generated one and covers every MAPO field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapo.trainer import MAPOConfig
from mapo.trainer.config_reference import BEGIN, END, SYMBOLS, mapo_fields, render, replace_in

PAGE = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_docs_table_is_the_generated_one():
    page = PAGE.read_text(encoding="utf-8")
    assert replace_in(page) == page, (
        "regenerate: python -m mapo.trainer.config_reference --write docs/training.md"
    )


def test_every_field_mapo_declares_has_a_symbol_and_range_and_nothing_stale():
    declared = {f.name for f in mapo_fields()}
    assert declared == set(SYMBOLS), (
        f"fields without a row: {sorted(declared - set(SYMBOLS))}; rows without a field: "
        f"{sorted(set(SYMBOLS) - declared)}"
    )
    assert {"eta", "mask_clip", "target_layers", "beta", "loss_type"} <= declared


def test_table_rows_show_the_real_defaults(tmp_path):
    cfg = MAPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    table = render()
    for name in ("eta", "beta", "tau_base", "mask_clip", "kappa", "prefactor_clip", "temperature"):
        assert (
            f"| `{name}` |" in table and f"| `{getattr(cfg, name)!r}`" in table.split(f"| `{name}` |")[1]
        ), name


def test_replace_needs_the_markers():
    with pytest.raises(ValueError, match="no generated MAPOConfig table"):
        replace_in("# a page without markers\n")
    assert replace_in(f"a\n{BEGIN}\nold\n{END}\nb").startswith("a\n" + BEGIN)
