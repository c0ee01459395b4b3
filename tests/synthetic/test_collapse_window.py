"""The warm-up's collapse window: SFT keeps the last validation checkpoint inside the window and stops once it closes."""

from __future__ import annotations

import math

import pytest
import torch

from mapo.synthetic import WarmupBudget, build_tiny_audio_lm, evaluate, make_task, warm_up
from mapo.synthetic import collapse_window as cw
from mapo.synthetic.task import SPLITS, make_split


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _script_validation(monkeypatch, figures, **others) -> None:
    """Make each window check read the next ``(trap early-note acc, late notes following the prior)`` of
    ``figures`` (the rule, not the tiny model, is then under test); ``others`` replace the remaining figures."""
    script = iter(figures)

    def scripted_evaluate(model, processor, rows, **_):
        early, follow = next(script)
        return {
            "trap/early_note_acc": early,
            "trap/late_follow_prior": follow,
            "trap/attn_ratio": 0.5,
            "trap/answer_acc": 0.1,
            "prior/answer_acc": 0.8,
            **others,
        }

    monkeypatch.setattr(cw, "evaluate", scripted_evaluate)


def _sft_only(**fields) -> WarmupBudget:
    """A budget with the SFT stage only (batch 4), checked every 2 steps on 4 validation rows."""
    base = dict(encoder_steps=0, text_steps=0, align_steps=0, batch_size=4, sft_check_every=2, val_items=4)
    return WarmupBudget(**{**base, **fields})


def test_val_split_is_its_own_stream_and_half_trap():
    task = make_task(seed=4, n_train=6, n_eval=6, n_rl=6)
    val = make_split(4, task.config, "val", 10, trap_fraction=0.5)
    assert "val" in SPLITS and [r["trap"] for r in val] == [True, False] * 5  # spread evenly
    assert {r["id"] for r in val}.isdisjoint(
        r["id"] for s in (task.train, task.prior, task.trap, task.rl) for r in s
    )
    seen = {tuple(r["audio"][:8].tolist()) for s in (task.train, task.prior, task.trap, task.rl) for r in s}
    assert not any(tuple(r["audio"][:8].tolist()) in seen for r in val)  # other random stream, other clips
    again = make_split(4, task.config, "val", 10, trap_fraction=0.5)
    assert all((a["audio"] == b["audio"]).all() and a["notes"] == b["notes"] for a, b in zip(val, again))
    with pytest.raises(ValueError, match="split must be one of"):
        make_split(4, task.config, "dev", 2)
    with pytest.raises(ValueError, match="trap_fraction"):
        make_split(4, task.config, "val", 2, trap_fraction=1.5)


def test_check_applies_the_rule_to_evaluate_and_restores_the_kept_weights():
    """`inside` is the rule applied to an independent evaluate() of the same rows; restore() brings back the
    weights of the last inside checkpoint, not the latest ones."""
    task = make_task(seed=6, n_train=4, n_eval=2)
    model, processor = build_tiny_audio_lm(seed=6)
    rows = make_split(6, task.config, "val", 8, trap_fraction=0.5)
    window = cw.CollapseWindow(model, processor, rows, early_min=0.0, follow_min=0.0)
    stop = window.check(10)
    relabelled = [dict(r, split="trap" if r["trap"] else "prior") for r in rows]
    m = evaluate(model, processor, relabelled)
    c = window.checks[0]
    assert c.early_note_acc == pytest.approx(m["trap/early_note_acc"], abs=1e-4)
    expected_inside = not math.isnan(m["trap/late_follow_prior"])  # thresholds 0: inside unless NaN
    assert c.inside is expected_inside and stop is False
    kept = _weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    if expected_inside:
        assert window.restore() == 10
        for k, v in model.state_dict().items():
            assert torch.equal(v, kept[k]), k
    else:
        assert window.restore() is None
    with pytest.raises(ValueError, match="both trap and training-distribution"):
        cw.CollapseWindow(model, processor, [r for r in rows if r["trap"]], early_min=0.0, follow_min=0.0)


def test_warm_up_keeps_the_last_inside_checkpoint_and_stops_when_the_window_closes(monkeypatch):
    """Scripted validation figures (the rule, not the tiny model, is under test): outside, inside, inside, outside
    → SFT stops at the 4th check and the model holds the weights of the 3rd."""
    _script_validation(monkeypatch, [(0.2, 0.3), (0.95, 0.9), (0.97, 0.75), (1.0, 0.4), (1.0, 0.9)])
    model, processor = build_tiny_audio_lm(seed=3)
    task = make_task(seed=3, n_train=8, n_eval=2)
    budget = _sft_only(sft_steps=10)
    snapshots = {}

    def on_step(stage: str, step: int) -> None:
        snapshots[step] = _weights(model)

    report = warm_up(model, processor, task, budget, seed=3, progress=False, on_step=on_step)
    assert [c["step"] for c in report.sft_checks] == [2, 4, 6, 8]
    assert [c["inside"] for c in report.sft_checks] == [False, True, True, False]
    assert report.sft_kept_step == 6 and report.steps_run["sft"] == 8
    assert not torch.equal(snapshots[6]["lm_head.weight"], snapshots[8]["lm_head.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[6][k]), k


def test_without_an_inside_checkpoint_the_last_step_is_kept(monkeypatch):
    nan = float("nan")
    _script_validation(monkeypatch, [(0.1, nan)] * 2, **{"trap/attn_ratio": nan, "trap/answer_acc": 0.0})
    model, processor = build_tiny_audio_lm(seed=3)
    budget = _sft_only(sft_steps=4)
    report = warm_up(model, processor, make_task(seed=3, n_train=8, n_eval=2), budget, seed=3, progress=False)
    assert report.sft_kept_step is None and report.steps_run["sft"] == 4
    assert report.sft_checks[0]["late_follow_prior"] is None  # NaN → null: the report stays valid JSON


@pytest.mark.parametrize(
    "field, value, message",
    [("sft_check_every", -1, "sft_check_every"), ("window_follow_min", 1.5, "window_follow_min")],
)
def test_budget_rejects_bad_window_settings(field, value, message):
    kwargs = dict(encoder_steps=0, text_steps=0, align_steps=0, sft_steps=4)
    with pytest.raises(ValueError, match=message):
        WarmupBudget(**{**kwargs, field: value})
    with pytest.raises(ValueError, match="val_items"):
        WarmupBudget(**kwargs, sft_check_every=2, val_items=1)


def test_sft_restarts_with_another_batch_order_when_a_schedule_never_enters_the_window(monkeypatch):
    """Attempt 0 stays outside (the model never reads the audio); attempt 1 starts again from the weights SFT
    started from, enters the window at its first check and leaves it at the second → its first checkpoint is kept."""
    _script_validation(monkeypatch, [(0.2, 0.3)] * 3 + [(0.95, 0.9), (0.99, 0.2)])
    model, processor = build_tiny_audio_lm(seed=3)
    start = _weights(model)
    task = make_task(seed=3, n_train=8, n_eval=2)
    budget = _sft_only(sft_steps=6, sft_attempts=3)
    snapshots: list[dict[str, torch.Tensor]] = []
    report = warm_up(
        model,
        processor,
        task,
        budget,
        seed=3,
        progress=False,
        on_step=lambda s, n: snapshots.append(_weights(model)),
    )
    assert [(c["attempt"], c["step"], c["inside"]) for c in report.sft_checks] == [
        (0, 2, False),
        (0, 4, False),
        (0, 6, False),
        (1, 2, True),
        (1, 4, False),
    ]
    assert report.sft_kept_step == 2 and report.steps_run["sft"] == 6 + 4
    attempt0_step1, attempt1_step1, attempt1_step2 = snapshots[0], snapshots[6], snapshots[7]
    for k, v in model.state_dict().items():
        assert torch.equal(v, attempt1_step2[k]), k
    # one step from the start weights in both attempts, but on other batches: close to each other, not equal
    w0, w1, w_start = (d["lm_head.weight"] for d in (attempt0_step1, attempt1_step1, start))
    assert not torch.equal(w0, w1)
    # attempt 1 restarted from the start weights, not from where attempt 0 ended
    assert (w1 - w_start).abs().max() <= 2 * (w0 - w_start).abs().max() + 1e-6
