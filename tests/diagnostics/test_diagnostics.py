"""Diagnostics on the tiny random Qwen2-Audio: shapes, agreement with the probe and with eager attention, the ACS
table, linear probes on planted signals, the modality gap, and the files written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mapo.diagnostics import (
    NO_WORD,
    acs_table,
    evidence_masking,
    frame_edges,
    linear_probe_layers,
    mask_waveform,
    modality_gap,
    modality_gap_by_layer,
    modality_states,
    plot_acs,
    plot_linear_probes,
    plot_modality_gap,
    plot_pos_entropy,
    pooled_features,
    pos_entropy_summary,
    region_weights,
    select_regions,
    split_rows,
    summarize_by_tag,
    teacher_forced_signals,
    train_linear_probe,
    trajectories_from_signals,
    write_trajectories,
)
from mapo.eval import EvalItem, GenerationSettings
from mapo.modality import audio_key_mask, completion_query_mask, concat_prompt_completion, resolve_modality
from mapo.probe import audio_attention
from mapo.testing import sine_clip

# ---------------------------------------------------------------------------------------------------------------
# Signals, trajectories
# ---------------------------------------------------------------------------------------------------------------


def test_signal_shapes_and_delta_h(tiny, generated):
    model, processor = tiny
    batch, ids, mask = generated
    sig = teacher_forced_signals(model, batch.inputs, ids, mask, tokenizer=processor.tokenizer)
    for name in ("mass_max", "mass_mean", "entropy", "text_entropy", "delta_h"):
        value = getattr(sig, name)
        assert value.shape == ids.shape and value.dtype == torch.float32, name
        assert torch.all(value[mask == 0] == 0), name
    assert torch.all((sig.mass_mean <= sig.mass_max + 1e-6) & (sig.mass_max <= 1.0))
    assert (sig.mass_max[mask.bool()] > 0).all()
    torch.testing.assert_close(sig.delta_h, (sig.text_entropy - sig.entropy) * mask)


def test_plotted_mass_equals_probe_mass(tiny, generated, tmp_path):
    model, processor = tiny
    batch, ids, mask = generated
    spec = resolve_modality(model, processor.tokenizer)
    for b, (row, cid, cm) in enumerate(split_rows(batch.inputs, ids, mask)):
        sig = teacher_forced_signals(model, row, cid, cm, tokenizer=processor.tokenizer)
        payload = write_trajectories(
            trajectories_from_signals(sig, processor.tokenizer, [f"r{b}"]), str(tmp_path)
        )
        plotted = json.loads((tmp_path / "trajectory.json").read_text())["trajectories"][0]
        assert plotted == payload["trajectories"][0] and len(plotted["mass_max"]) == int(cm.sum())
        # Independent: the probe on the same concatenated inputs, read at rows P-1+t.
        cat = concat_prompt_completion(row["input_ids"], row["attention_mask"], cid, cm)
        p = row["input_ids"].shape[1]
        keys = audio_key_mask(cat.input_ids, spec)
        for head_reduce, name in (("max", "mass_max"), ("mean", "mass_mean")):
            with audio_attention(model, keys, completion_query_mask(p, cm), head_reduce=head_reduce) as cap:
                model(
                    input_ids=cat.input_ids,
                    attention_mask=cat.attention_mask,
                    input_features=row["input_features"],
                    feature_attention_mask=row["feature_attention_mask"],
                )
            expected = cap.mass[0, p - 1 : p - 1 + cid.shape[1]]
            np.testing.assert_allclose(plotted[name], expected.tolist(), rtol=1e-5, atol=1e-7)
    assert len(list(tmp_path.glob("trajectory_*.png"))) == 3 and (tmp_path / "trajectory.json").exists()


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_signals_on_omni_thinkers(family):
    from mapo.testing import omni_audio_inputs, tiny_qwen3_omni_thinker, tiny_qwen25_omni_thinker

    tiny = (tiny_qwen25_omni_thinker if family == "qwen2_5_omni" else tiny_qwen3_omni_thinker)()
    inputs = omni_audio_inputs(
        tiny,
        ["<|im_start|>user\n"] * 2,
        ["Which?<|im_end|>\n<|im_start|>assistant\n"] * 2,
        [sine_clip(seconds=1.0), sine_clip(seconds=0.6)],
    )
    completion = torch.randint(20, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    sig = teacher_forced_signals(
        tiny.model, inputs, completion, mask, tokenizer=tiny.tokenizer, key_attention=True
    )
    assert sig.mass_max.shape == (2, 5) and torch.all(sig.mass_max[1, 3:] == 0)
    torch.testing.assert_close(sig.key_attention.sum(-1), sig.mass_mean, rtol=1e-5, atol=1e-6)
    audio, text = modality_states(tiny.model, inputs, [-1], tokenizer=tiny.tokenizer)[2]
    assert audio.shape[1] == text.shape[1] == 64


# ---------------------------------------------------------------------------------------------------------------
# Evidence masking / ACS
# ---------------------------------------------------------------------------------------------------------------


def test_masking_units():
    np.testing.assert_array_equal(frame_edges(4, 10), [0, 2, 5, 7, 10])
    w, spans = region_weights(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2)
    np.testing.assert_array_equal(w, [3.0, 7.0, 5.0]) and spans == [(0, 2), (2, 4), (4, 5)]
    rng = np.random.default_rng(0)
    weights = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.0, 0.4, 0.8, 0.6, 0.7])
    assert sorted(select_regions(weights, 0.3, "top", rng)) == [3, 7, 9]
    assert sorted(select_regions(weights, 0.3, "low", rng)) == [0, 2, 5]
    rand = select_regions(weights, 0.3, "random", rng)
    assert len(set(rand.tolist())) == 3  # duration-matched: as many regions as top
    assert len(select_regions(weights, 0.01, "top", rng)) == 1  # at least one region
    wave = np.ones(1000, dtype=np.float32)
    masked = mask_waveform(wave, [(1, 3)], hop_length=160)
    assert masked[:160].all() and not masked[160:480].any() and masked[480:].all() and wave.all()
    rows = acs_table(
        [
            {
                "results": {(0.5, "top"): [0.0], (0.5, "random"): [1.0, 0.0], (0.5, "low"): [1.0]},
                "masked_fraction": {0.5: 0.5},
            }
        ],
        [0.5],
    )
    assert rows == [
        {
            "ratio": 0.5,
            "n_items": 1,
            "top": 0.0,
            "random": 0.5,
            "low": 1.0,
            "acs": 0.5,
            "masked_fraction": 0.5,
        }
    ]


@pytest.fixture
def tone_wavs(tmp_path, tone_clips):
    """The three tone clips written as WAV files; their paths."""
    sf = pytest.importorskip("soundfile")
    paths = []
    for i, clip in enumerate(tone_clips()):
        paths.append(str(tmp_path / f"clip{i}.wav"))
        sf.write(paths[-1], clip[0], 16000)
    return paths


def test_evidence_masking_table(tiny, tmp_path, tone_items, tone_wavs):
    model, processor = tiny
    items = tone_items(tone_wavs)[:2]
    items.append(
        EvalItem(
            id="two",
            benchmark="mmau-pro",
            group="closed",
            kind="choice",
            audio=items[0].audio * 2,
            question="?",
            choices=["a", "b"],
            answer="a",
        )
    )
    ratios = (0.1, 0.5)
    settings = GenerationSettings(max_new_tokens=3, batch_size=16)
    result = evidence_masking(model, processor, items, ratios, settings=settings, n_random=2, progress=False)
    assert result["skipped"] == {"several audio clips": 1}
    assert [row["ratio"] for row in result["table"]] == list(ratios)
    for row in result["table"]:
        assert set(row) == {"ratio", "n_items", "top", "random", "low", "acs", "masked_fraction"}
        assert all(0.0 <= row[m] <= 1.0 for m in ("top", "random", "low"))
        assert row["acs"] == pytest.approx(row["random"] - row["top"]) and row["n_items"] == 2
    assert result["table"][0]["masked_fraction"] < result["table"][1]["masked_fraction"] <= 0.6
    first = result["items"][0]
    assert first["n_audio_tokens"] == 25 and len(first["results"]["0.5/random"]) == 2
    files = plot_acs(result, str(tmp_path / "acs"))
    assert json.loads(open(files["json"]).read())["table"] == result["table"]
    assert open(files["png"], "rb").read(4) == b"\x89PNG"
    feats = evidence_masking(
        model,
        processor,
        items[:1],
        (0.5,),
        settings=GenerationSettings(max_new_tokens=2),
        domain="features",
        progress=False,
    )
    assert feats["settings"]["domain"] == "features" and len(feats["table"]) == 1


# ---------------------------------------------------------------------------------------------------------------
# POS entropy
# ---------------------------------------------------------------------------------------------------------------


def test_pos_summary(tiny, generated, tmp_path):
    summary = summarize_by_tag(
        [["NOUN", None, "NOUN"], ["VERB"]], [[2.0, 0.5, 4.0], [1.0]], [[1.0, 0.0, -3.0], [0.5]]
    )
    assert summary["NOUN"] == {"n": 2, "text_entropy": 3.0, "delta_h": -1.0, "abs_delta_h": 2.0}
    assert list(summary) == ["NOUN", "VERB", NO_WORD]  # by text-only entropy, highest first
    model, processor = tiny
    batch, ids, mask = generated
    sig = teacher_forced_signals(model, batch.inputs, ids, mask, tokenizer=processor.tokenizer)
    trajs = trajectories_from_signals(sig, processor.tokenizer)
    result = pos_entropy_summary(trajs, processor.tokenizer, "lexicon")
    assert sum(cell["n"] for cell in result["per_tag"].values()) == int(mask.sum())
    files = plot_pos_entropy(result, str(tmp_path))
    assert json.loads(open(files["json"]).read())["per_tag"] == json.loads(json.dumps(result["per_tag"]))


# ---------------------------------------------------------------------------------------------------------------
# Linear probes
# ---------------------------------------------------------------------------------------------------------------


def test_probe_planted_signal_and_noise(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 32, generator=gen)
    w = torch.randn(32, generator=gen)
    signal = (x @ w > 0).long()
    noise = torch.randint(0, 2, (400,), generator=gen)
    strong = train_linear_probe(x, signal, steps=100)
    weak = train_linear_probe(x, noise, steps=100)
    assert strong.test_accuracy > 0.9 and strong.n_test == 120 and strong.n_train == 280
    assert abs(weak.test_accuracy - 0.5) < 0.15 and abs(weak.chance - 0.5) < 0.15
    adam = train_linear_probe(x, signal.tolist(), optimizer="adam", steps=200)
    assert adam.test_accuracy > 0.85
    labels = ["yes" if s else "no" for s in signal]
    results = linear_probe_layers({0: x, 1: torch.randn(400, 32, generator=gen)}, labels, steps=100)
    assert results[0].test_accuracy > 0.9 and results[1].test_accuracy < 0.75
    files = plot_linear_probes(results, str(tmp_path), "planted")
    assert set(json.loads(open(files["json"]).read())["layers"]) == {"0", "1"}
    with pytest.raises(ValueError, match="two label values"):
        train_linear_probe(x, [1] * 400)


def test_pooled_features_shapes(tiny, generated):
    model, processor = tiny
    batch = generated[0]
    for pool in ("audio", "last", 0):
        feats = pooled_features(model, batch.inputs, [0, -1], pool, tokenizer=processor.tokenizer)
        assert sorted(feats) == [0, 3] and all(f.shape == (3, 32) for f in feats.values())
    with pytest.raises(ValueError, match="hidden-state indices"):
        pooled_features(model, batch.inputs, [9])


# ---------------------------------------------------------------------------------------------------------------
# Modality gap
# ---------------------------------------------------------------------------------------------------------------


def test_modality_gap_zero_and_positive(tmp_path):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=gen) * torch.linspace(
        3, 0.5, 16
    )  # anisotropic: well-defined subspaces
    same = modality_gap(a, a.clone())
    assert same["centroid_l2"] == 0.0 and same["centroid_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert same["subspace_distance"] == pytest.approx(0.0, abs=1e-6)
    shifted = modality_gap(a, a + 2.0)
    assert shifted["centroid_l2"] == pytest.approx(8.0) and shifted["subspace_distance"] == pytest.approx(
        0.0, abs=1e-6
    )
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen))
    rotated = modality_gap(a, a @ q.T)
    assert rotated["subspace_distance"] > 0.3 and len(rotated["principal_angles_deg"]) == 8
    files = plot_modality_gap({0: same, 1: shifted, 2: rotated}, str(tmp_path))
    assert json.loads(open(files["json"]).read())["1"]["centroid_l2"] == pytest.approx(8.0)
    assert math.isfinite(shifted["centroid_l2_relative"]) and shifted["centroid_l2_relative"] > 0


def test_modality_states_from_model(tiny, generated):
    model, processor = tiny
    states = modality_states(
        model, generated[0].inputs, [0, 3], tokenizer=processor.tokenizer, max_tokens_per_row=10
    )
    a, t = states[3]
    assert a.shape == (30, 32) and t.shape == (30, 32)
    gaps = modality_gap_by_layer(states, k=4)
    assert gaps[0]["centroid_l2"] > 0 and gaps[3]["k"] == 4


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_pngs_and_json(tiny, tmp_path, monkeypatch, tone_items, tone_wavs):
    import mapo.eval.runner
    from mapo.diagnostics.cli import main

    # Loading from disk is covered by the eval end-to-end test; here the CLI gets the in-memory tiny model.
    monkeypatch.setattr(mapo.eval.runner, "load_model_and_processor", lambda *a, **k: tiny)
    paths = tone_wavs
    rows = [
        {
            "id": it.id,
            "audio_id": p,
            "question": it.question,
            "choices": it.choices,
            "answer": it.answer,
            "task": it.group,
            "difficulty": "easy",
        }
        for it, p in zip(tone_items(paths), paths)
    ]
    data = tmp_path / "mmau.json"
    data.write_text(json.dumps(rows))
    common = [
        "--benchmark",
        "mmau",
        "--data",
        str(data),
        "--model",
        "tiny",
        "--max-new-tokens",
        "3",
        "--quiet",
    ]
    for command, extra, expected in (
        ("pos", [], ["pos_entropy.png", "pos_entropy.json", "trajectory.json", "trajectory_000_it0.png"]),
        ("gap", ["--k", "2"], ["modality_gap.png", "modality_gap.json"]),
        (
            "linear-probe",
            ["--label-field", "task", "--steps", "20"],
            ["linear_probe.png", "linear_probe.json"],
        ),
        ("evidence", ["--ratios", "0.5"], ["evidence_masking.png", "evidence_masking.json"]),
    ):
        out = tmp_path / command
        assert main([command, *common, "--output-dir", str(out), *extra]) == 0
        for name in expected:
            assert (out / name).exists(), (command, name)
    gap = json.loads((tmp_path / "gap" / "modality_gap.json").read_text())
    assert sorted(gap, key=int) == ["0", "1", "2", "3"]  # embeddings + the 3 decoder layers


def test_probe_with_too_few_items_writes_valid_json_and_outputs_are_not_replaced(
    tiny, tmp_path, monkeypatch, caplog, tone_items, tone_wavs
):
    import mapo.eval.runner
    from mapo.diagnostics.cli import main
    from mapo.eval.store import OutputExists

    monkeypatch.setattr(mapo.eval.runner, "load_model_and_processor", lambda *a, **k: tiny)
    paths = tone_wavs
    rows = [
        {
            "id": it.id,
            "audio_id": p,
            "question": it.question,
            "choices": it.choices,
            "answer": it.answer,
            "task": it.group,
            "difficulty": "easy",
        }
        for it, p in zip(tone_items(paths), paths)
    ]
    data = tmp_path / "mmau.json"
    data.write_text(json.dumps(rows))
    argv = [
        "linear-probe",
        "--benchmark",
        "mmau",
        "--data",
        str(data),
        "--model",
        "tiny",
        "--limit",
        "2",
        "--quiet",
        "--label-field",
        "task",
        "--steps",
        "5",
        "--output-dir",
        str(tmp_path / "p"),
    ]
    assert main(argv) == 0
    text = (tmp_path / "p" / "linear_probe.json").read_text()
    json.loads(text)  # strict JSON: no bare NaN
    assert "NaN" not in text and "Infinity" not in text
    index = (tmp_path / "p" / "linear_probe_outputs.json").read_text()
    with pytest.raises(OutputExists, match="pass --overwrite"):
        main(argv)
    assert (tmp_path / "p" / "linear_probe_outputs.json").read_text() == index
    assert main([*argv, "--overwrite"]) == 0
