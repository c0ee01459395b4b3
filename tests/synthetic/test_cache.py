"""The warm-up cache: a saved warmed-up model loads back bit for bit; another seed, budget or thread count misses."""

from __future__ import annotations

import torch

from mapo.synthetic import BUDGETS, WarmupBudget, WarmupReport, build_tiny_audio_lm
from mapo.synthetic.cache import cache_dir, load_warm_model, save_warm_model, warm_model_key


def test_round_trip_and_misses(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPO_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    trained, _ = build_tiny_audio_lm(seed=1)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)  # something a fresh build does not have
    report = WarmupReport(budget={"x": 1}, seconds={"sft": 2.5}, final_loss={"sft": 0.3}, curves={})
    budget = BUDGETS["quick"]
    path = save_warm_model(trained, seed=3, budget=budget, report=report)
    assert path.is_file() and path.parent == tmp_path

    fresh, _ = build_tiny_audio_lm(seed=1)
    assert load_warm_model(fresh, seed=4, budget=budget) is None  # other seed
    assert load_warm_model(fresh, seed=3, budget=BUDGETS["default"]) is None  # other budget
    got = load_warm_model(fresh, seed=3, budget=budget)
    assert got is not None and got.seconds == {"sft": 2.5} and got.final_loss == {"sft": 0.3}
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name

    threads = torch.get_num_threads()
    try:  # the warm-up is deterministic only per thread count: another count is another entry
        torch.set_num_threads(threads + 1)
        assert load_warm_model(fresh, seed=3, budget=budget) is None
    finally:
        torch.set_num_threads(threads)


def test_corrupt_entry_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPO_CACHE_DIR", str(tmp_path))
    model, _ = build_tiny_audio_lm(seed=0)
    budget = WarmupBudget(encoder_steps=1, text_steps=1, align_steps=0, sft_steps=1)
    stem = tmp_path / warm_model_key(0, budget)
    stem.with_suffix(".safetensors").write_bytes(b"not a checkpoint")
    stem.with_suffix(".json").write_text("{}")
    assert load_warm_model(model, seed=0, budget=budget) is None


def test_a_fresh_warm_up_and_a_cache_load_give_the_same_trainable_set(tmp_path, monkeypatch):
    """The RL arms' optimiser takes the trainable parameters: a first run (warm-up in process) and a second run
    (cache load) must hand them the same set, or the demo's numbers depend on the cache (they did: the warm-up
    left Qwen2-Audio's frozen sinusoidal position table trainable, a cache load did not)."""
    from mapo.synthetic import make_task, warm_up

    monkeypatch.setenv("MAPO_CACHE_DIR", str(tmp_path))
    model, processor = build_tiny_audio_lm(seed=2)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    frozen = [n for n, trainable in flags.items() if not trainable]
    assert any("embed_positions" in n for n in frozen), frozen  # the architecture freezes it
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in frozen}
    budget = WarmupBudget(encoder_steps=2, text_steps=2, align_steps=0, sft_steps=2, batch_size=4)
    report = warm_up(model, processor, make_task(seed=2, n_train=8, n_eval=2), budget, seed=2, progress=False)

    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), f"{n} is frozen by the architecture but the warm-up trained it"
    save_warm_model(model, seed=2, budget=budget, report=report)
    loaded, _ = build_tiny_audio_lm(seed=2)
    assert load_warm_model(loaded, seed=2, budget=budget) is not None
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == flags
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
