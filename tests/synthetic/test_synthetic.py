"""Tests for mapo.synthetic: the tone-melody task, its tokenizer/processor/model, warm-up and evaluation."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from mapo.synthetic import (
    NOTE_NAMES,
    TaskConfig,
    WarmupBudget,
    build_processor,
    build_tiny_audio_lm,
    completion_signals,
    completion_text,
    evaluate,
    make_task,
    note_token_labels,
    parse_completion,
    prompt_of,
    warm_up,
)
from mapo.synthetic.batching import Encoder
from mapo.synthetic.evaluate import _auroc
from mapo.synthetic.task import ORDINALS, question_text


@pytest.fixture(scope="module")
def processor():
    return build_processor()


@pytest.fixture(scope="module")
def task():
    return make_task(seed=5, n_train=600, n_eval=150)


# ---------------------------------------------------------------------------------------------------------------
# Task generator
# ---------------------------------------------------------------------------------------------------------------


def test_make_task_is_deterministic_by_seed():
    a, b, c = make_task(3, 6, 4), make_task(3, 6, 4), make_task(4, 6, 4)
    for split in ("train", "prior", "trap"):
        for ra, rb in zip(a.split(split), b.split(split), strict=True):
            np.testing.assert_array_equal(ra["audio"], rb["audio"])
            assert ra["notes"] == rb["notes"] and ra["step"] == rb["step"]
    assert any(not np.array_equal(ra["audio"], rc["audio"]) for ra, rc in zip(a.train, c.train))


def test_rows_have_the_documented_columns(task):
    row = task.trap[0]
    assert row["split"] == "trap" and row["sampling_rate"] == 16000
    assert row["audio"].dtype == np.float32 and row["audio"].shape == (16000,)
    assert np.abs(row["audio"]).max() <= 0.9 + 1e-6
    assert row["choices"] == list(NOTE_NAMES) and row["answer"] in row["choices"]
    assert row["answer"] == row["notes"][-1]
    assert row["completion"] == completion_text(row["notes"])
    assert parse_completion(row["completion"]) == (row["notes"], row["answer"])
    prompt = prompt_of(row)
    assert prompt[0]["role"] == "user"
    assert [p["type"] for p in prompt[0]["content"]] == ["audio", "text"]
    assert prompt[0]["content"][1]["text"] == question_text()
    from datasets import Dataset

    ds = Dataset.from_list(task.train[:3])
    assert ds.column_names and {"audio", "choices", "answer", "split", "notes"} <= set(ds.column_names)


def test_trap_items_follow_the_pattern_then_break_it(task):
    k, tail = task.config.n_notes, task.config.trap_tail
    for row in task.trap:
        idx = [NOTE_NAMES.index(n) for n in row["notes"]]
        s = row["step"]
        assert all((idx[i] - idx[i - 1]) % 5 == s % 5 for i in range(1, k - tail))
        clean = k - tail - 1
        for i in range(k - tail, k):
            assert (idx[i] - idx[i - 1]) % 5 != s % 5  # breaks the chain written so far
            assert idx[i] != (idx[clean] + (i - clean) * s) % 5  # and the prior's own continuation
        assert row["follows_prior"] == [False] + [True] * (k - tail - 1) + [False] * tail


def test_training_notes_follow_the_step_with_probability_p():
    task = make_task(0, 800, 0, prior=0.8)
    follows = [f for r in task.train for f in r["follows_prior"][1:]]
    assert abs(np.mean(follows) - 0.8) < 0.03


def test_text_only_ngram_predictor_is_good_in_prior_and_fails_on_traps(task):
    """The prior lives in the text: a trigram over note names fitted on train predicts in-prior last notes only."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for row in task.train:
        n = row["notes"]
        for i in range(2, len(n)):
            counts[(n[i - 2], n[i - 1])][n[i]] += 1

    def predict_last(notes: list[str]) -> str:
        chain = list(notes[:2])  # condition on the first two notes only: the rest comes from the text prior
        while len(chain) < len(notes):
            chain.append(counts[(chain[-2], chain[-1])].most_common(1)[0][0])
        return chain[-1]

    prior_acc = np.mean([predict_last(r["notes"]) == r["answer"] for r in task.prior])
    trap_acc = np.mean([predict_last(r["notes"]) == r["answer"] for r in task.trap])
    assert prior_acc > 0.6  # about p ** 4 ≈ 0.81 expected
    assert trap_acc < 0.05  # 0 by construction


def test_rl_split_mixes_trap_items_without_touching_the_other_splits():
    base, with_rl = make_task(2, 5, 3), make_task(2, 5, 3, n_rl=40, rl_trap_fraction=0.25)
    assert [r["notes"] for r in base.trap] == [r["notes"] for r in with_rl.trap]
    assert sum(r["trap"] for r in with_rl.rl) == 10 and {r["split"] for r in with_rl.rl} == {"rl"}
    assert sum(r["trap"] for r in with_rl.rl[:20]) == 5  # spread evenly
    for row in (r for r in with_rl.rl if r["trap"]):
        assert row["follows_prior"] == [False, True, True, True, False, False]
    assert not any(r["trap"] for r in with_rl.train + with_rl.prior) and all(r["trap"] for r in with_rl.trap)


def test_bad_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="prior"):
        TaskConfig(prior=1.5)
    with pytest.raises(ValueError, match="trap_tail"):
        TaskConfig(n_notes=4, trap_tail=3)
    with pytest.raises(ValueError, match="n_train"):
        make_task(0, -1, 0)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer, labels, processor, model
# ---------------------------------------------------------------------------------------------------------------


def test_every_task_word_is_one_token(processor):
    tok = processor.tokenizer
    for word in [*NOTE_NAMES, *ORDINALS]:
        assert tok.tokenize(f" {word}") == [f"Ġ{word}"]
    for special in ("<think>", "</think>", "<answer>", "</answer>", "<|AUDIO|>", "<|im_end|>"):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id


def test_labels_are_one_exactly_on_note_tokens(processor, task):
    tok = processor.tokenizer
    for row in task.trap[:20]:
        ids = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels = note_token_labels(ids, tok)
        assert len(labels) == len(ids)
        tokens = tok.convert_ids_to_tokens(ids)
        inside = tokens.index("<think>") < np.arange(len(ids))
        inside &= np.arange(len(ids)) < tokens.index("</think>")
        expected = [int(inside[i] and t.lstrip("Ġ") in NOTE_NAMES) for i, t in enumerate(tokens)]
        assert labels == expected
        assert sum(labels) == task.config.n_notes
        # the chain is "<think> first X1 second X2 ..." so the note tokens sit at 2, 4, ..., 2K
        assert [i for i, v in enumerate(labels) if v] == list(range(2, 2 * task.config.n_notes + 1, 2))
        assert labels[tokens.index("<answer>") + 1] == 0  # the answer copies the chain: scaffolding


def test_labels_on_malformed_completions(processor):
    tok = processor.tokenizer
    no_think = tok(" first C second D", add_special_tokens=False)["input_ids"]
    assert note_token_labels(no_think, tok) == [0] * len(no_think)
    unclosed = tok("<think> first C second", add_special_tokens=False)["input_ids"]
    assert note_token_labels(unclosed, tok) == [0, 0, 1, 0]
    assert note_token_labels([], tok) == []


def test_parse_completion_handles_partial_outputs():
    assert parse_completion("<think> first C second Bb</think><answer>Bb</answer>") == (["C", "Bb"], "Bb")
    assert parse_completion("<think> first C second") == (["C"], None)
    assert parse_completion("garbage") == ([], None)


def test_processor_prompt_is_short_and_matches_the_encoder(processor, task):
    rows = task.train[:3]
    out = processor.apply_chat_template(
        [prompt_of(r) for r in rows],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    text = processor.apply_chat_template([prompt_of(rows[0])], add_generation_prompt=True, tokenize=False)[0]
    assert text.startswith("<|im_start|>user\n<|audio_bos|>") and "system" not in text
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert int((out["input_ids"][0] == audio_id).sum()) == 25  # 1 s → 100 frames → 25 placeholders
    assert out["input_features"].shape == (3, 128, 100)
    enc = Encoder(processor)
    assert out["input_ids"][0].tolist() == enc.prompt_ids(rows[0]["question"])
    feats, mask = enc.features([r["audio"] for r in rows])
    torch.testing.assert_close(out["input_features"], feats)
    assert torch.equal(out["feature_attention_mask"], mask)
    text_only = enc.text_only_ids(enc.prompt_ids(rows[0]["question"]))
    assert audio_id not in text_only and len(text_only) == out["input_ids"].shape[1] - 27


def test_model_builds_offline_and_forward_uses_the_audio(processor, task):
    model, _ = build_tiny_audio_lm(seed=0, processor=processor)
    assert model.config.audio_config.max_source_positions * 2 == processor.feature_extractor.nb_max_frames
    rows = task.train[:2]
    inputs = processor.apply_chat_template(
        [prompt_of(r) for r in rows],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        inputs["input_features"] = inputs["input_features"].flip(0)
        swapped = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(processor.tokenizer))
    assert not torch.allclose(logits[0], swapped[0])  # the audio reaches the language model


# ---------------------------------------------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------------------------------------------


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=60).astype(float)  # many ties
    labels = rng.integers(0, 2, size=60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert _auroc(scores, labels) == pytest.approx(pairwise)
    assert np.isnan(_auroc(scores, np.ones(60, dtype=int)))


def test_completion_signals_match_a_naive_eager_computation(processor, task):
    """a_t (max head, mean layers, row P-1+t), H_policy and H_text vs attention matrices and full-vocab softmax."""
    from mapo.modality import resolve_modality

    model, _ = build_tiny_audio_lm(seed=2, processor=processor)
    enc = Encoder(processor)
    rows = task.trap[:3]
    completions = enc.completion_ids([r["completion"] for r in rows])
    completions[1] = completions[1][:7]  # ragged: right padding must not change anything
    batch = enc.batch(
        [enc.prompt_ids(r["question"]) for r in rows], completions, enc.features([r["audio"] for r in rows])
    )
    spec = resolve_modality(model, processor.tokenizer)
    mass, h_policy, h_text = completion_signals(model, batch, spec, enc.pad_id)

    p = batch.prompt_len
    model.set_attn_implementation({"text_config": "eager"})
    with torch.no_grad():
        out = model(**batch.model_inputs(), output_attentions=True)
    model.set_attn_implementation({"text_config": "sdpa"})
    audio = batch.input_ids == enc.audio_token_id
    for b, comp in enumerate(completions):
        prompt = enc.prompt_ids(rows[b]["question"])
        text_ids = torch.tensor(
            [[i for i in prompt if i not in enc.spec.marker_ids + (enc.audio_token_id,)] + comp]
        )
        with torch.no_grad():
            text_logits = model(input_ids=text_ids).logits[0]
        for t in range(batch.completion_mask.shape[1]):
            if t >= len(comp):
                assert mass[b, t] == h_policy[b, t] == h_text[b, t] == 0
                continue
            row = p - 1 + t
            per_layer = [att[b, :, row][:, audio[b]].sum(-1).max() for att in out.attentions]
            assert float(mass[b, t]) == pytest.approx(float(torch.stack(per_layer).mean()), abs=1e-4)
            probs = torch.softmax(out.logits[b, row].double(), -1)
            assert float(h_policy[b, t]) == pytest.approx(float(-(probs * probs.log()).sum()), abs=1e-4)
            probs = torch.softmax(text_logits[text_ids.shape[1] - len(comp) - 1 + t].double(), -1)
            assert float(h_text[b, t]) == pytest.approx(float(-(probs * probs.log()).sum()), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Warm-up + evaluation end to end
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_warm_up_runs_end_to_end_and_is_deterministic(processor):
    task = make_task(seed=1, n_train=8, n_eval=3)
    budget = WarmupBudget(encoder_steps=2, text_steps=2, align_steps=2, sft_steps=2, batch_size=4)
    weights = []
    for _ in range(2):
        model, _ = build_tiny_audio_lm(seed=1, processor=processor)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        report = warm_up(model, processor, task, budget, seed=1, progress=False)
        weights.append(model.state_dict())
    assert set(report.seconds) == {"features", "encoder", "text", "align", "sft"}
    assert all(np.isfinite(v) for v in report.final_loss.values())
    assert not torch.equal(before["lm_head.weight"], weights[0]["lm_head.weight"])
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    # the trainable set of a fresh build (= of a cache load): the architecture's frozen position table stays frozen
    fresh, _ = build_tiny_audio_lm(seed=1, processor=processor)
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in fresh.parameters()]
    assert not model.training

    metrics = evaluate(model, processor, task.prior + task.trap, return_records=True)
    for split in ("prior", "trap"):
        assert 0.0 <= metrics[f"{split}/answer_acc"] <= 1.0
        assert len(metrics[f"{split}/note_acc"]) == task.config.n_notes
    for rec in metrics["records"]:
        assert len(rec["labels"]) == len(rec["mass"]) == len(rec["dh"])
        assert np.all((rec["mass"] >= 0) & (rec["mass"] <= 1 + 1e-5))


def test_warm_up_rejects_unknown_budget(processor):
    model, _ = build_tiny_audio_lm(seed=0, processor=processor)
    with pytest.raises(ValueError, match="budget"):
        warm_up(model, processor, make_task(0, 0, 0), budget="huge")
    with pytest.raises(ValueError, match="n_train"):
        warm_up(model, processor, make_task(0, 2, 0), budget="quick")
