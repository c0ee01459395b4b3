"""`mapo demo --quick` end to end: warm-up, three RL arms with the real trainers, results.json and plots."""

from __future__ import annotations

import json

import pytest

from mapo.cli import main as mapo_main
from mapo.synthetic.report import COLUMNS, aggregate, format_table


@pytest.mark.slow
def test_quick_demo_writes_results_and_plots(tmp_path):
    out = tmp_path / "demo"
    assert mapo_main(["demo", "--quick", "--output-dir", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["budget"] == "quick" and results["seeds"] == 1
    assert set(results["summary"]) == {"base", "grpo", "mask_only", "mapo"}
    for row, stats in results["summary"].items():
        for key, _ in COLUMNS:
            if key in stats:
                assert stats[key]["n"] == 1 and stats[key]["std"] == 0.0
        assert 0.0 <= stats["trap/answer_acc"]["mean"] <= 1.0, row
    seed0 = results["per_seed"][0]
    # the warmed-up model is collapsed: audio attention decays along the chain, trap items fail
    assert seed0["base"]["metrics"]["trap/attn_ratio"] < 0.9
    assert seed0["base"]["metrics"]["trap/answer_acc"] < seed0["base"]["metrics"]["prior/answer_acc"]
    for arm in ("grpo", "mask_only", "mapo"):
        assert [p["step"] for p in seed0[arm]["curve"]] == [12, 24]
        assert any("mapo/attn_loss" in h for h in seed0[arm]["logs"]) == (arm == "mapo")
    for name in results["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_reports_mean_and_std_over_seeds():
    seeds = [
        {"base": {"metrics": {"trap/answer_acc": 0.1, "prior/answer_acc": 0.7}}},
        {"base": {"metrics": {"trap/answer_acc": 0.3, "prior/answer_acc": float("nan")}}},
    ]
    summary = aggregate(seeds)
    assert summary["base"]["trap/answer_acc"] == pytest.approx(
        {"mean": 0.2, "std": 0.1414213, "n": 2}, rel=1e-5
    )
    assert summary["base"]["prior/answer_acc"]["n"] == 1  # NaN seeds are left out, not averaged as 0
    table = format_table(summary, 2)
    assert "0.200 ± 0.141" in table and "base (warmed up)" in table
