"""Chunked fp32 log-probs and entropies (mapo.modality.token_stats) against a full-softmax computation."""

from __future__ import annotations

import pytest
import torch

from mapo.modality import (
    audio_key_mask,
    completion_logps_and_entropies,
    completion_query_mask,
    concat_prompt_completion,
    logps_and_entropies_from_hidden,
    resolve_modality,
)
from mapo.probe import audio_attention
from mapo.testing import (
    omni_audio_inputs,
    sine_clip,
    tiny_qwen2_audio,
    tiny_qwen2_audio_processor,
    tiny_qwen3_omni_thinker,
    tiny_qwen25_omni_thinker,
)

COMPLETION = torch.tensor([[40, 41, 42, 43, 44, 45, 46], [50, 51, 52, 53, 0, 0, 0]])
CMASK = torch.tensor([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])


def _qwen2_audio_batch():
    proc = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(num_layers=2)
    convs = [
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is it?"}]}],
        [
            {
                "role": "user",
                "content": [{"type": "audio"}, {"type": "text", "text": "Describe the melody in detail"}],
            }
        ],
    ]
    text = proc.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
    enc = proc(
        text=text,
        audio=[sine_clip(), sine_clip(300, 0.5, seed=1)],
        return_tensors="pt",
        padding=True,
        sampling_rate=16000,
    )
    cat = concat_prompt_completion(enc["input_ids"], enc["attention_mask"], COMPLETION, CMASK)
    feats = {"input_features": enc["input_features"], "feature_attention_mask": enc["feature_attention_mask"]}
    return model, cat, feats, enc["input_ids"].shape[1]


def _reference(model, cat, temperature, **feats):
    """Full [B, L, V] logits from the model's own forward, then log-softmax over the whole vocabulary."""
    logits = model(input_ids=cat.input_ids, attention_mask=cat.attention_mask, **feats).logits
    logp = torch.log_softmax(logits[:, cat.query_rows].float() / temperature, dim=-1)
    tokens = cat.input_ids[:, -cat.logits_to_keep :]
    return logp.gather(-1, tokens[..., None])[..., 0], -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3])
@pytest.mark.parametrize("chunk_size", [1, 5, 1024])  # N = 2 * 7 = 14 positions: 5 does not divide it
def test_matches_full_softmax_with_audio(temperature, chunk_size):
    model, cat, feats, _ = _qwen2_audio_batch()
    logps, ents = completion_logps_and_entropies(
        model,
        cat.input_ids,
        cat.attention_mask,
        cat.logits_to_keep,
        temperature=temperature,
        chunk_size=chunk_size,
        **feats,
    )
    ref_logps, ref_ents = _reference(model, cat, temperature, **feats)
    assert logps.dtype == ents.dtype == torch.float32 and logps.shape == COMPLETION.shape
    assert not logps.requires_grad
    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ents, ref_ents, atol=1e-5, rtol=1e-5)


def test_audio_features_matter_and_text_only_runs():
    model, cat, feats, _ = _qwen2_audio_batch()
    with_audio, _ = completion_logps_and_entropies(
        model, cat.input_ids, cat.attention_mask, cat.logits_to_keep, **feats
    )
    without, ent = completion_logps_and_entropies(
        model, cat.input_ids, cat.attention_mask, cat.logits_to_keep
    )
    ref_logps, ref_ents = _reference(model, cat, 1.0)
    torch.testing.assert_close(without, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, ref_ents, atol=1e-5, rtol=1e-5)
    assert (with_audio - without).abs().max() > 1e-4  # the backbone ran the audio tower


@pytest.mark.parametrize("factory", [tiny_qwen25_omni_thinker, tiny_qwen3_omni_thinker])
def test_omni_thinkers_with_audio(factory):
    tiny = factory()
    clips = [sine_clip(440, 1.0), sine_clip(300, 1.6, seed=1)]
    enc = omni_audio_inputs(tiny, ["Describe the sound.", "Hi"], ["Answer:", "What is it?"], clips)
    cat = concat_prompt_completion(enc["input_ids"], enc["attention_mask"], COMPLETION, CMASK)
    feats = {"input_features": enc["input_features"], "feature_attention_mask": enc["feature_attention_mask"]}
    logps, ents = completion_logps_and_entropies(
        tiny.model,
        cat.input_ids,
        cat.attention_mask,
        cat.logits_to_keep,
        temperature=0.9,
        chunk_size=3,
        **feats,
    )
    ref_logps, ref_ents = _reference(tiny.model, cat, 0.9, **feats)
    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ents, ref_ents, atol=1e-5, rtol=1e-5)
    text_only, _ = completion_logps_and_entropies(
        tiny.model, cat.input_ids, cat.attention_mask, cat.logits_to_keep, temperature=0.9
    )
    assert (text_only - logps).abs().max() > 1e-5  # the backbone (model.model) ran the audio tower


def test_gradients_match_full_softmax_and_probe_shares_the_forward():
    model, cat, feats, p = _qwen2_audio_batch()
    params = [model.lm_head.weight, model.model.language_model.layers[1].self_attn.q_proj.weight]
    keys = audio_key_mask(cat.input_ids, resolve_modality(model))
    with audio_attention(model, keys, completion_query_mask(p, CMASK)) as cap:
        logps, ents = completion_logps_and_entropies(
            model,
            cat.input_ids,
            cat.attention_mask,
            cat.logits_to_keep,
            temperature=0.8,
            chunk_size=4,
            requires_grad=True,
            **feats,
        )
    mass = cap.mass[:, cat.query_rows]
    assert mass.shape == COMPLETION.shape and mass.requires_grad and len(cap.records) == 1
    w = CMASK.float()
    grads = torch.autograd.grad(((logps + 0.5 * ents) * w).sum(), params, retain_graph=True)
    ref_logps, ref_ents = _reference(model, cat, 0.8, **feats)
    ref_grads = torch.autograd.grad(((ref_logps + 0.5 * ref_ents) * w).sum(), params)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    assert torch.autograd.grad(mass.sum(), params[1])[0].abs().max() > 0


def test_from_hidden_and_errors():
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(3, 4, 8)
    tokens = torch.randint(0, 11, (3, 4))
    lp, ent = logps_and_entropies_from_hidden(hidden, tokens, head, temperature=2.0, chunk_size=5)
    logp = torch.log_softmax(head(hidden) / 2.0, dim=-1)
    torch.testing.assert_close(lp, logp.gather(-1, tokens[..., None])[..., 0])
    torch.testing.assert_close(ent, -(logp.exp() * logp).sum(-1))
    with pytest.raises(ValueError, match="temperature"):
        logps_and_entropies_from_hidden(hidden, tokens, head, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        logps_and_entropies_from_hidden(hidden, tokens, head, chunk_size=0)
    model, cat, feats, _ = _qwen2_audio_batch()
    with pytest.raises(ValueError, match="logits_to_keep"):
        completion_logps_and_entropies(model, cat.input_ids, cat.attention_mask, cat.input_ids.shape[1])
