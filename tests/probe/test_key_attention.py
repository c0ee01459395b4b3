"""Per-audio-key attention (mapo.probe.audio_key_attention) on the tiny random Qwen2-Audio: agreement with eager
attention and with the probe's mean-head mass, read through the diagnostics' teacher-forced signals; errors.

The fixtures ``tiny`` and ``generated`` come from tests/conftest.py (shared with tests/diagnostics)."""

from __future__ import annotations

import pytest
import torch

from mapo.diagnostics import split_rows, teacher_forced_signals
from mapo.modality import audio_key_mask, concat_prompt_completion, resolve_modality
from mapo.probe import audio_key_attention


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
