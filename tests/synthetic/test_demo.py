"""`mapo demo --quick` end to end: warm-up, three RL arms with the real trainers, results.json and plots."""

from __future__ import annotations

import json

import pytest

from mapo.cli import main as mapo_main
from mapo.synthetic.report import COLUMNS, aggregate, format_table


@pytest.mark.slow
def test_quick_demo_writes_results_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert mapo_main(["demo", "--quick", "--output-dir", str(out), "--no-progress", "--first-seed", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["budget"] == "quick" and results["seeds"] == 1 and results["first_seed"] == 0
    assert len(list((tmp_path / "cache").glob("seed0-*.safetensors"))) == 1  # the warm-up was cached
    assert len(results["interpretation"]) >= 3 and "MAPO − GRPO" in results["interpretation"][2]
    assert [r["seed"] for r in results["criteria"]["per_seed"]] == [0]
    assert "summary.png" in results["plots"]
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
    # the SFT stage was checked on the validation split every 25 steps and kept a checkpoint inside the window
    warmup = seed0["base"]["warmup"]
    assert [c["step"] for c in warmup["sft_checks"] if c["attempt"] == 0][:2] == [25, 50]
    kept = [c for c in warmup["sft_checks"] if c["inside"]][-1]
    assert warmup["sft_kept_step"] == kept["step"] and kept["late_follow_prior"] >= 0.7
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


def _seed_rows(base_ratio, grpo_late, mapo_late, mapo_trap, grpo_trap=0.4, prior_drop=0.0):
    """Per-seed demo rows with just the metrics the criteria and the interpretation read."""

    def metrics(prior, trap, late_acc, a_early, a_late, follow=0.2):
        return {
            "prior/answer_acc": prior,
            "prior/format_ok": 1.0,
            "trap/format_ok": 1.0,
            "trap/answer_acc": trap,
            "trap/late_note_acc": late_acc,
            "trap/late_follow_prior": follow,
            "trap/attn_early": a_early,
            "trap/attn_late": a_late,
            "trap/attn_ratio": a_late / a_early,
            "trap/attn_note_profile": [a_early, a_early, 0.5, 0.5, a_late, a_late],
        }

    return {
        "base": {"metrics": metrics(0.8, 0.1, 0.1, 0.8, 0.8 * base_ratio, follow=0.7)},
        "grpo": {"metrics": metrics(0.8, grpo_trap, 0.3, 0.8, grpo_late)},
        "mapo": {"metrics": metrics(0.8 - prior_drop, mapo_trap, 0.35, 0.8, mapo_late)},
    }


def test_criteria_follow_the_issue_thresholds():
    from mapo.synthetic.report import check_criteria

    good = _seed_rows(base_ratio=0.6, grpo_late=0.4, mapo_late=0.7, mapo_trap=0.5)
    bad = _seed_rows(base_ratio=0.8, grpo_late=0.4, mapo_late=0.5, mapo_trap=0.5, prior_drop=0.1)
    crit = check_criteria([good, bad], first_seed=7)
    first, second = crit["per_seed"]
    assert (first["seed"], second["seed"]) == (7, 8)
    assert first["base_collapsed"] and not second["base_collapsed"]  # ratio 0.8 > 0.75
    assert first["mapo_late_mass_x_grpo"] == pytest.approx(0.7 / 0.4)
    assert first["mapo_late_mass_ok"] and first["mapo_ratio_ok"]  # 1.75x; +0.375
    assert not second["mapo_late_mass_ok"] and not second["mapo_ratio_ok"]  # 1.25x; +0.125
    assert first["mapo_keeps_prior"] and not second["mapo_keeps_prior"]  # 0.7 < 0.8 - 0.05
    assert crit["all"]["grpo_keeps_prior"] and not crit["all"]["mapo_keeps_prior"]


def test_interpretation_says_when_mapo_loses():
    from mapo.synthetic.report import aggregate, comparison, interpretation

    seeds = [
        _seed_rows(0.6, grpo_late=0.4, mapo_late=0.7, mapo_trap=0.30, grpo_trap=0.40),
        _seed_rows(0.6, grpo_late=0.4, mapo_late=0.7, mapo_trap=0.32, grpo_trap=0.41),
        _seed_rows(0.6, grpo_late=0.4, mapo_late=0.7, mapo_trap=0.29, grpo_trap=0.42),
    ]
    d = comparison(seeds)["mapo_minus_grpo"]["trap/answer_acc"]
    assert d["per_seed"] == pytest.approx([-0.10, -0.09, -0.13])
    assert d["positive"] == 0 and d["mean"] == pytest.approx(-0.10666667)
    text = " ".join(interpretation(aggregate(seeds), seeds))
    assert "answer accuracy -0.107 (lower; 0/3 seeds positive, beyond seed noise" in text
    assert "MAPO keeps more audio attention" in text and "(1.75×)" in text
    assert "no RL arm lost in-prior accuracy" in text


def test_readme_demo_tables_are_the_committed_benchmark_output():
    """The README's demo figures come from benchmarks/results/demo_seeds.json (`demo_seeds.py --markdown`)."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("demo_seeds", root / "benchmarks" / "demo_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (root / "README.md").read_text()
    for name in ("demo_seeds.json", "demo_seeds_first200.json"):
        tables = module.markdown(json.loads((root / "benchmarks" / "results" / name).read_text()))
        missing = [line for line in tables.splitlines() if line.strip() and line not in readme]
        assert not missing, f"README lines not matching {name}: {missing[:3]}"
