"""Per-audio-key attention (mapo.probe.audio_key_attention) on the tiny random Qwen2-Audio: agreement with eager
attention and with the probe's mean-head mass, read through the diagnostics' teacher-forced signals; errors."""

from __future__ import annotations

import pytest
import torch

from mapo.diagnostics import split_rows, teacher_forced_signals
from mapo.eval import EvalItem, GenerationSettings, encode_prompts, generate_batch
from mapo.modality import audio_key_mask, concat_prompt_completion, resolve_modality
from mapo.probe import audio_key_attention
from mapo.testing import sine_clip, tiny_qwen2_audio, tiny_qwen2_audio_processor

SECONDS = (1.0, 0.75, 0.5)


@pytest.fixture(scope="module")
def tiny():
    processor = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer, num_layers=3)
    return model, processor


def _items(n=3):
    return [
        EvalItem(
            id=f"it{i}",
            benchmark="mmau",
            group=("sound", "music", "speech")[i % 3],
            kind="choice",
            audio=[f"clip{i}.wav"],
            question="Which tone is it?",
            choices=["low", "mid", "high"],
            answer=("low", "mid", "high")[i % 3],
            meta={"task": ("a", "b")[i % 2]},
        )
        for i in range(n)
    ]


def _clips(n=3):
    return [[sine_clip(220.0 * (i + 1), seconds=SECONDS[i % 3], seed=i)] for i in range(n)]


@pytest.fixture(scope="module")
def generated(tiny):
    model, processor = tiny
    settings = GenerationSettings(max_new_tokens=8)
    batch = encode_prompts(model, processor, _items(), settings, _clips())
    ids, mask = generate_batch(model, processor, batch, settings)
    return batch, ids, mask


def test_key_attention_matches_eager_attention_and_mean_mass(tiny, generated):
    model, processor = tiny
    batch, ids, mask = generated
    spec = resolve_modality(model, processor.tokenizer)
    row, cid, cm = next(split_rows(batch.inputs, ids, mask))
    sig = teacher_forced_signals(model, row, cid, cm, tokenizer=processor.tokenizer, key_attention=True)
    n_audio = int(sig.audio_valid.sum())
    assert sig.key_attention.shape == (1, cid.shape[1], n_audio)
    torch.testing.assert_close(sig.key_attention.sum(-1), sig.mass_mean, rtol=1e-5, atol=1e-6)
    # Independent: eager attention probabilities, mean over heads, mean over the (default: all 3) layers.
    cat = concat_prompt_completion(row["input_ids"], row["attention_mask"], cid, cm)
    model.set_attn_implementation({"text_config": "eager"})
    try:
        out = model(
            input_ids=cat.input_ids,
            attention_mask=cat.attention_mask,
            input_features=row["input_features"],
            feature_attention_mask=row["feature_attention_mask"],
            output_attentions=True,
        )
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})
    cols = audio_key_mask(cat.input_ids, spec)[0].nonzero().flatten()
    eager = torch.stack([a[0].float().mean(0) for a in out.attentions]).mean(0)  # [L, L]
    expected = eager[cat.query_rows][:, cols][None]
    torch.testing.assert_close(sig.key_attention, expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(sig.audio_index[0, :n_audio], cols)


def test_key_attention_errors(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="head_reduce"):
        with audio_key_attention(
            model, torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4), head_reduce="sum"
        ):
            pass
    with pytest.raises(RuntimeError, match="run exactly one forward"):
        with audio_key_attention(model, torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4)) as cap:
            pass
        cap.attention  # noqa: B018
