"""The audio attention probe (mapo.probe) against a materialised-softmax reference, on the three tiny families."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from mapo.modality import audio_key_mask, completion_query_mask, resolve_modality
from mapo.probe import (
    PROBE_IMPLEMENTATION,
    audio_attention,
    audio_key_attention,
    default_target_layers,
    disable_probe_attention,
    enable_probe_attention,
    naive_audio_attention,
)
from mapo.testing import (
    omni_audio_inputs,
    sine_clip,
    tiny_qwen2_audio,
    tiny_qwen2_audio_processor,
    tiny_qwen3_omni_thinker,
    tiny_qwen25_omni_thinker,
)

FAMILIES = ("qwen2_audio", "qwen25_omni", "qwen3_omni")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # gradient_checkpointing_enable is a deprecated alias
        warnings.filterwarnings("ignore", "None of the inputs have requires_grad")  # reentrant under no_grad
        yield


def _with_completion(enc: dict, completion: list[list[int]], pad: int) -> dict:
    """Append a right-padded completion to a left-padded prompt; add the probe's key and query masks."""
    width = max(len(c) for c in completion)
    comp = torch.tensor([c + [pad] * (width - len(c)) for c in completion])
    cmask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completion])
    p = enc["input_ids"].shape[1]
    batch = dict(enc)
    batch["input_ids"] = torch.cat([enc["input_ids"], comp], dim=1)
    batch["attention_mask"] = torch.cat([enc["attention_mask"], cmask], dim=1)
    return batch, completion_query_mask(p, cmask)


def make_case(family: str, num_layers: int = 3, num_kv_heads: int = 2, seed: int = 0):
    """(model, forward kwargs, audio key mask, query mask) for a left-padded two-row batch with real audio."""
    completion = [[40, 41, 42, 43, 44, 45], [50, 51, 52]]
    if family == "qwen2_audio":
        proc = tiny_qwen2_audio_processor()
        model = tiny_qwen2_audio(num_layers=num_layers, num_kv_heads=num_kv_heads, seed=seed)
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
        clips = [sine_clip(440, 1.0), sine_clip(300, 0.5, seed=1)]
        enc = dict(proc(text=text, audio=clips, return_tensors="pt", padding=True, sampling_rate=16000))
        pad = proc.tokenizer.pad_token_id
    else:
        factory = tiny_qwen25_omni_thinker if family == "qwen25_omni" else tiny_qwen3_omni_thinker
        tiny = factory(num_layers=num_layers, seed=seed)
        model = tiny.model
        clips = [sine_clip(440, 1.0), sine_clip(300, 1.6, seed=1)]  # different audio lengths
        enc = omni_audio_inputs(tiny, ["Describe the sound.", "Hi"], ["Answer:", "What is it?"], clips)
        pad = tiny.tokenizer.pad_token_id
    batch, qmask = _with_completion(enc, completion, pad)
    keys = audio_key_mask(batch["input_ids"], resolve_modality(model))
    assert (batch["attention_mask"][:, 0] == 0).any(), "the batch must be left-padded"
    return model, batch, keys, qmask


def _attn_weights(model, layers):
    lm = model.model.language_model
    return [
        p
        for i in layers
        for p in (lm.layers[i].self_attn.q_proj.weight, lm.layers[i].self_attn.k_proj.weight)
    ]


def _mass_and_grads(model, batch, keys, qmask, naive: bool, **kw):
    ctx = naive_audio_attention(model, keys, batch["attention_mask"], qmask, **kw) if naive else None
    ctx = ctx or audio_attention(model, keys, qmask, **kw)
    with ctx as cap:
        model(**batch)
        weight = torch.linspace(0.5, 1.5, cap.mass.numel()).reshape(cap.mass.shape)
        # Inside the block: checkpointed layers recompute with the probe still installed.
        grads = torch.autograd.grad((cap.mass * weight).sum(), _attn_weights(model, cap.target_layers))
    return cap.mass.detach(), grads


# ----------------------------------------------------------------------------------------------------------------
# Values and gradients vs the naive path
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_probe_matches_naive_values_and_gradients(family):
    model, batch, keys, qmask = make_case(family)
    mass, grads = _mass_and_grads(model, batch, keys, qmask, naive=False)
    ref, ref_grads = _mass_and_grads(model, batch, keys, qmask, naive=True)
    assert mass.dtype == torch.float32 and mass.shape == keys.shape
    torch.testing.assert_close(mass, ref, atol=1e-5, rtol=0)
    assert (mass[~qmask] == 0).all() and (mass[qmask] > 0).all()
    with audio_attention(model, keys, qmask) as cap:
        model(**batch)
    sdpa_node = cap.records[0].raw[2].grad_fn.next_functions[0][0]
    assert "Flash" in type(sdpa_node).__name__  # a fused kernel: no [T_q, S] weights are materialised
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head_reduce", ["max", "mean"])
@pytest.mark.parametrize("layer_reduce", ["mean", "max"])
def test_reductions_and_per_head_match_naive(head_reduce, layer_reduce):
    model, batch, keys, qmask = make_case("qwen2_audio", num_layers=4)
    kw = dict(target_layers=[1, 3], head_reduce=head_reduce, layer_reduce=layer_reduce, keep_heads=True)
    with audio_attention(model, keys, qmask, **kw) as cap:
        model(**batch)
    with naive_audio_attention(model, keys, batch["attention_mask"], qmask, **kw) as ref:
        model(**batch)
    torch.testing.assert_close(cap.mass, ref.mass, atol=1e-5, rtol=0)
    assert sorted(cap.per_head) == [1, 3] and cap.per_head[1].shape == (2, 4, keys.shape[1])
    for layer in (1, 3):
        torch.testing.assert_close(cap.per_head[layer], ref.per_head[layer], atol=1e-5, rtol=0)
    heads = torch.stack([cap.per_head[i] for i in (1, 3)])  # [2, B, H, L]
    per_layer = heads.max(dim=2).values if head_reduce == "max" else heads.mean(dim=2)
    expect = per_layer.mean(0) if layer_reduce == "mean" else per_layer.max(0).values
    torch.testing.assert_close(cap.mass, expect)
    # Both trajectories of the diagnostics from one forward.
    torch.testing.assert_close(cap.reduced("mean", "mean"), heads.mean(dim=2).mean(0))


def test_matches_hf_eager_output_attentions():
    model, batch, keys, qmask = make_case("qwen2_audio")
    with audio_attention(model, keys, qmask, keep_heads=True) as cap:
        model(**batch)
    model.set_attn_implementation({"text_config": "eager"})
    out = model(**batch, output_attentions=True)
    for layer in cap.target_layers:
        eager = (out.attentions[layer] * keys[:, None, None, :]).sum(-1) * qmask[:, None, :]
        torch.testing.assert_close(cap.per_head[layer], eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_kv_heads", [1, 4])
def test_mqa_and_mha(num_kv_heads):
    model, batch, keys, qmask = make_case("qwen2_audio", num_kv_heads=num_kv_heads)
    mass, grads = _mass_and_grads(model, batch, keys, qmask, naive=False)
    ref, ref_grads = _mass_and_grads(model, batch, keys, qmask, naive=True)
    torch.testing.assert_close(mass, ref, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_scattered_query_rows_and_all_rows():
    model, batch, keys, qmask = make_case("qwen2_audio")
    scattered = torch.zeros_like(qmask)
    scattered[0, [40, 47, 60]] = True
    scattered[1, [47, 70]] = True
    for q in (scattered, None):
        with audio_attention(model, keys, q) as cap:
            model(**batch)
        with naive_audio_attention(model, keys, batch["attention_mask"], q) as ref:
            model(**batch)
        torch.testing.assert_close(cap.mass, ref.mass, atol=1e-5, rtol=0)
    left_pad = batch["attention_mask"].cumsum(dim=1) == 0
    assert left_pad.any() and (cap.mass[left_pad] == 0).all()  # fully masked (left-pad) rows carry no mass


def test_bf16_close_to_fp32():
    model, batch, keys, qmask = make_case("qwen2_audio")
    with audio_attention(model, keys, qmask) as cap:
        model(**batch)
    model.to(torch.bfloat16)
    bf16_batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
    with audio_attention(model, keys, qmask) as low:
        model(**bf16_batch)
    assert low.mass.dtype == torch.float32
    torch.testing.assert_close(low.mass, cap.mass.detach(), atol=3e-2, rtol=0)
    low.mass.sum().backward()  # the bf16 graph is usable


# ----------------------------------------------------------------------------------------------------------------
# The model is unchanged by the probe
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_generate_unchanged(family):
    model, batch, keys, qmask = make_case(family)
    lm_config = model.model.language_model.config
    audio_config = model.model.audio_tower.config
    plain = model(**batch).logits
    prompt = {k: v for k, v in batch.items()}
    width = keys.shape[1] - 6
    prompt["input_ids"], prompt["attention_mask"] = (
        batch["input_ids"][:, :width],
        batch["attention_mask"][:, :width],
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    with audio_attention(model, keys, qmask) as cap:
        assert lm_config._attn_implementation == PROBE_IMPLEMENTATION
        assert audio_config._attn_implementation == "sdpa"
        probed = model(**batch).logits
    assert torch.equal(probed, plain)
    prompt_keys = keys[:, :width]
    with audio_attention(model, prompt_keys) as gen_cap:
        probed_generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(probed_generated, generated)
    # The prefill is captured; decode steps reuse the KV cache and are skipped.
    assert (
        len(gen_cap.records) == 1
        and gen_cap.skipped_forwards == 3
        and gen_cap.mass.shape == prompt_keys.shape
    )
    assert lm_config._attn_implementation == "sdpa" and audio_config._attn_implementation == "sdpa"
    assert cap.mass.shape == keys.shape


# ----------------------------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_non_reentrant_checkpointing_same_mass_and_gradients(family):
    model, batch, keys, qmask = make_case(family)
    model.train()
    mass, grads = _mass_and_grads(model, batch, keys, qmask, naive=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_activation_checkpointing
    ck_mass, ck_grads = _mass_and_grads(model, batch, keys, qmask, naive=False)
    torch.testing.assert_close(ck_mass, mass, atol=0, rtol=0)
    for g, r in zip(ck_grads, grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-5)


def test_reentrant_checkpointing_raises():
    model, batch, keys, qmask = make_case("qwen2_audio")
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(RuntimeError, match="reentrant gradient checkpointing"):
        with audio_attention(model, keys, qmask):
            model(**batch)
    assert model.model.language_model.config._attn_implementation == "sdpa"
    with torch.no_grad(), audio_attention(model, keys, qmask) as cap:  # no graph wanted: fine
        model(**batch)
    assert cap.mass.shape == keys.shape


def test_backward_after_the_block_with_checkpointing():
    model, batch, keys, qmask = make_case("qwen2_audio")
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with audio_attention(model, keys, qmask) as cap:
        model(**batch)
    with pytest.raises(RuntimeError, match="enable_probe_attention"):
        cap.mass.sum().backward()
    assert enable_probe_attention(model) == "sdpa"
    with audio_attention(model, keys, qmask) as cap:  # a trainer: capture in the loss, backward later
        model(**batch)
    cap.mass.sum().backward()
    assert model.model.language_model.config._attn_implementation == PROBE_IMPLEMENTATION
    disable_probe_attention(model)
    assert model.model.language_model.config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------------------------------------------
# Housekeeping and errors
# ----------------------------------------------------------------------------------------------------------------


def test_implementation_restored_on_exception_and_enabled_model_kept():
    model, batch, keys, qmask = make_case("qwen2_audio")
    with pytest.raises(KeyError), audio_attention(model, keys, qmask):
        raise KeyError("boom")
    assert model.model.language_model.config._attn_implementation == "sdpa"
    enable_probe_attention(model)
    with audio_attention(model, keys, qmask):
        model(**batch)
    assert model.model.language_model.config._attn_implementation == PROBE_IMPLEMENTATION
    assert model.model.audio_tower.config._attn_implementation == "sdpa"


def test_full_omni_model_uses_the_thinker():
    model, batch, keys, qmask = make_case("qwen3_omni")

    class FullOmni(nn.Module):  # the layout of Qwen3OmniMoeForConditionalGeneration, without talker weights
        def __init__(self, thinker):
            super().__init__()
            self.thinker = thinker
            self.config = thinker.config

    full = FullOmni(model)
    with audio_attention(full, keys, qmask) as cap:
        assert model.model.language_model.config._attn_implementation == PROBE_IMPLEMENTATION
        full.thinker(**batch)
    with naive_audio_attention(model, keys, batch["attention_mask"], qmask) as ref:
        model(**batch)
    torch.testing.assert_close(cap.mass, ref.mass, atol=1e-5, rtol=0)


def test_probe_finds_the_decoder_where_the_spec_says():
    """The decoder location is a fact of the ModalitySpec: a layout no discovery path knows works once the spec
    names it, and a wrong path is refused with the field to fix."""
    model, batch, keys, qmask = make_case("qwen2_audio")

    class Holder(nn.Module):  # the model two attributes deep, under names locate_decoder does not search
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    holder = Holder(model)
    spec = dataclasses.replace(
        resolve_modality(model), language_model_path="inner.model.language_model", attn_owner_path="inner"
    )
    with pytest.raises(ValueError, match="could not find the language-model decoder of Holder"):
        with audio_attention(holder, keys, qmask):
            pass
    with audio_attention(holder, keys, qmask, spec=spec) as cap:
        assert model.model.language_model.config._attn_implementation == PROBE_IMPLEMENTATION
        model(**batch)
    assert model.model.language_model.config._attn_implementation == "sdpa"
    with naive_audio_attention(model, keys, batch["attention_mask"], qmask) as ref:
        model(**batch)
    torch.testing.assert_close(cap.mass, ref.mass, atol=1e-5, rtol=0)
    wrong = dataclasses.replace(spec, language_model_path="inner.model.multi_modal_projector")
    with pytest.raises(ValueError, match=r"inner.model.multi_modal_projector is a .* without `.layers`"):
        with audio_attention(holder, keys, qmask, spec=wrong):
            pass
    with pytest.raises(ValueError, match=r"attn_config_key='audio_config'.*Fix the ModalitySpec"):
        with audio_attention(
            holder, keys, qmask, spec=dataclasses.replace(spec, attn_config_key="audio_config")
        ):
            pass


def test_duplicated_target_layers_are_refused_by_both_captures():
    """A repeated layer would count twice in the layer mean (the per-key map of [1, 1] was half that of [1])."""
    model, batch, keys, qmask = make_case("qwen2_audio")
    with pytest.raises(ValueError, match=r"distinct layer indices in \[0, 3\).*got \[1, 1\]"):
        with audio_attention(model, keys, qmask, target_layers=[1, 1]):
            pass
    with pytest.raises(ValueError, match=r"distinct layer indices in \[0, 3\).*got \[1, 1\]"):
        with audio_key_attention(model, keys, qmask, batch["attention_mask"], target_layers=[1, 1]):
            pass


def test_default_target_layers():
    assert default_target_layers(48) == (43, 44, 45, 46, 47)
    assert default_target_layers(3) == (0, 1, 2)
    model, batch, keys, qmask = make_case("qwen2_audio", num_layers=7)
    with audio_attention(model, keys, qmask) as cap:
        model(**batch)
    assert cap.target_layers == (2, 3, 4, 5, 6) and len(cap.records[0].raw) == 5


def test_errors():
    model, batch, keys, qmask = make_case("qwen2_audio")
    with pytest.raises(ValueError, match=r"target_layers must be .* \[0, 3\)"):
        with audio_attention(model, keys, qmask, target_layers=[1, 3]):
            pass
    with pytest.raises(ValueError, match="key positions"):  # width of another forward
        with audio_attention(model, keys[:, :-1], qmask[:, :-1]):
            model(**batch)
    no_audio = keys.clone()
    no_audio[1] = False
    with pytest.raises(ValueError, match=r"rows \[1\] of audio_key_mask have no audio key"):
        with audio_attention(model, no_audio, qmask):
            pass
    skip_row = qmask.clone()
    skip_row[1] = False
    with audio_attention(model, no_audio, skip_row) as cap:  # an unqueried row may lack audio
        model(**batch)
    assert (cap.mass[1] == 0).all()
    with pytest.raises(ValueError, match="head_reduce"):
        with audio_attention(model, keys, qmask, head_reduce="min"):
            pass
    with pytest.raises(ValueError, match="keep_heads=True"):
        _ = cap.per_head
    with audio_attention(model, keys, qmask) as cap:
        model(**batch)
        with pytest.raises(RuntimeError, match="nested"):
            with audio_attention(model, keys, qmask):
                pass
        model(**batch)
    assert len(cap.records) == 2
    with pytest.raises(ValueError, match="2 forwards were captured"):
        _ = cap.mass
    torch.testing.assert_close(cap.records[0].reduce(), cap.records[1].reduce())
    with audio_attention(model, keys, qmask) as cap:
        pass
    with pytest.raises(ValueError, match="0 forwards were captured"):
        _ = cap.mass
