"""Audio key masks, the text-only prompt of the Δh reference and the prompt + completion layout
(mapo.modality.layout)."""

from __future__ import annotations

import pytest
import torch

from mapo.modality import (
    ModalitySpec,
    audio_key_mask,
    completion_logps_and_entropies,
    completion_query_mask,
    concat_prompt_completion,
    resolve_modality,
    text_only_prompt,
)
from mapo.testing import (
    omni_audio_inputs,
    sine_clip,
    tiny_qwen2_audio,
    tiny_qwen2_audio_processor,
    tiny_qwen3_omni_thinker,
)

# --------------------------------------------------------------------------------------------------------------
# Masks and the text-only prompt
# --------------------------------------------------------------------------------------------------------------

SPEC = ModalitySpec.generic(audio_token_id=9, start=8, end=10)
PAD = 0


def _left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


ROWS = [
    [1, 2, 8, 9, 9, 9, 10, 3, 4],  # one clip
    [5, 8, 9, 9, 10, 6, 8, 9, 10, 7, 8],  # two clips; a trailing 8 that is not a marker of any run
    [8, 9, 9, 9, 9, 9, 9, 10, 11],  # audio first
]
EXPECTED = [[1, 2, 3, 4], [5, 6, 7, 8], [11]]


def test_audio_key_mask():
    ids, _ = _left_pad(ROWS)
    keys = audio_key_mask(ids, SPEC)
    assert torch.equal(keys, ids == 9)
    with_markers_mask = audio_key_mask(ids, SPEC, include_markers=True)
    assert with_markers_mask.sum() == keys.sum() + 2 + 4 + 2  # the stray trailing 8 of row 1 is not a marker
    generated = torch.cat([ids, torch.full((3, 2), 9)], dim=1)  # a placeholder id generated in the completion
    assert torch.equal(audio_key_mask(generated, SPEC, prompt_width=ids.shape[1])[:, : ids.shape[1]], keys)
    assert not audio_key_mask(generated, SPEC, prompt_width=ids.shape[1])[:, ids.shape[1] :].any()
    with pytest.raises(ValueError, match=r"rows \[1\] contain no audio placeholder"):
        audio_key_mask(torch.tensor([[1, 9, 2], [1, 2, 3]]), SPEC)
    assert audio_key_mask(torch.tensor([[1, 9, 2], [1, 2, 3]]), SPEC, allow_empty_rows=True)[1].sum() == 0


def test_text_only_prompt_drops_audio_and_markers_and_left_pads():
    ids, mask = _left_pad(ROWS)
    text_ids, text_mask = text_only_prompt(ids, mask, SPEC, pad_token_id=PAD)
    assert text_ids.shape == (3, 4) and text_mask.dtype == mask.dtype
    for b, expected in enumerate(EXPECTED):
        n = len(expected)
        assert text_mask[b].tolist() == [0] * (4 - n) + [1] * n  # left padding
        assert text_ids[b, 4 - n :].tolist() == expected  # order kept
        assert (text_ids[b, : 4 - n] == PAD).all()
    kept = text_ids[text_mask.bool()]
    assert not (kept == 9).any() and not (kept == 10).any()
    same_ids, same_mask = text_only_prompt(ids, mask, SPEC, PAD, text_only_mode="keep_placeholders")
    assert same_ids is ids and same_mask is mask
    bad_ids, bad_mask = _left_pad([[1, 9, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"prompt rows \[1\] contain no audio placeholder"):
        text_only_prompt(bad_ids, bad_mask, SPEC, PAD)
    with pytest.raises(ValueError, match=r"prompt rows \[1\]"):
        text_only_prompt(bad_ids, bad_mask, SPEC, PAD, text_only_mode="keep_placeholders")
    with pytest.raises(ValueError, match="text_only_mode must be one of"):
        text_only_prompt(ids, mask, SPEC, PAD, text_only_mode="zero")


def test_concat_and_query_rows():
    prompt, pmask = _left_pad([[1, 9, 2], [9, 3]])
    completion = torch.tensor([[20, 21, 22], [30, 31, PAD]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    cat = concat_prompt_completion(prompt, pmask, completion, cmask)
    assert cat.input_ids.shape == (2, 6) and cat.logits_to_keep == 3 and cat.query_rows == slice(2, 5)
    # Row P-1+t holds the token before completion token t.
    assert torch.equal(cat.input_ids[:, cat.query_rows][:, 1:], completion[:, :-1])
    assert torch.equal(cat.input_ids[:, cat.query_rows][:, 0], prompt[:, -1])
    q = completion_query_mask(3, cmask)
    assert q.tolist() == [[False, False, True, True, True, False], [False, False, True, True, False, False]]


# --------------------------------------------------------------------------------------------------------------
# Text-only reference entropies line up with the policy's, token by token
# --------------------------------------------------------------------------------------------------------------


def _full_softmax_stats(model, ids: list[int], n_completion: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded single-row forward, full logits: (logps, entropies) of the last n_completion tokens."""
    x = torch.tensor([ids])
    logits = (
        model(input_ids=x, attention_mask=torch.ones_like(x), **kw).logits[0, -n_completion - 1 : -1].float()
    )
    logp = torch.log_softmax(logits, dim=-1)
    target = x[0, -n_completion:]
    return logp.gather(-1, target[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


def _qwen2_audio_prompts():
    proc = tiny_qwen2_audio_processor()
    convs = [
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is it?"}]}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Listen"},
                    {"type": "audio"},
                    {"type": "text", "text": "Describe the melody in detail"},
                ],
            }
        ],
    ]
    text = proc.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
    clips = [sine_clip(440, 1.0), sine_clip(300, 0.5, seed=1)]
    enc = proc(text=text, audio=clips, return_tensors="pt", padding=True, sampling_rate=16000)
    return enc, proc.tokenizer


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen3_omni"])
def test_text_reference_entropies_align_with_the_policy(family):
    if family == "qwen2_audio":
        model = tiny_qwen2_audio(num_layers=2)
        enc, tok = _qwen2_audio_prompts()
        spec = resolve_modality(model, tok)
    else:
        tiny = tiny_qwen3_omni_thinker()
        model, tok = tiny.model, tiny.tokenizer
        clips = [sine_clip(440, 1.0), sine_clip(300, 1.6, seed=1)]
        enc = omni_audio_inputs(tiny, ["Describe the sound.", "Hi"], ["Answer:", "What is it?"], clips)
        spec = resolve_modality(model)
    completion = torch.tensor([[40, 41, 42, 43, 44], [50, 51, 52, tok.pad_token_id, tok.pad_token_id]])
    cmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    features = {k: enc[k] for k in spec.audio_feature_kwargs if k in enc}

    policy = concat_prompt_completion(enc["input_ids"], enc["attention_mask"], completion, cmask)
    p_logps, p_ent = completion_logps_and_entropies(
        model, policy.input_ids, policy.attention_mask, policy.logits_to_keep, **features
    )
    text_ids, text_mask = text_only_prompt(enc["input_ids"], enc["attention_mask"], spec, tok.pad_token_id)
    ref = concat_prompt_completion(text_ids, text_mask, completion, cmask)
    t_logps, t_ent = completion_logps_and_entropies(
        model, ref.input_ids, ref.attention_mask, ref.logits_to_keep
    )
    keep = concat_prompt_completion(
        *text_only_prompt(
            enc["input_ids"], enc["attention_mask"], spec, tok.pad_token_id, "keep_placeholders"
        ),
        completion,
        cmask,
    )
    k_logps, k_ent = completion_logps_and_entropies(
        model, keep.input_ids, keep.attention_mask, keep.logits_to_keep
    )
    assert p_ent.shape == t_ent.shape == k_ent.shape == completion.shape  # one column per completion token

    audio_ids = {spec.audio_token_id, *spec.marker_ids}
    for b in range(2):
        n = int(cmask[b].sum())
        prompt = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
        text_prompt = [t for t in prompt if t not in audio_ids]
        assert text_ids[b][text_mask[b].bool()].tolist() == text_prompt
        # Index t of the text reference is the entropy of the distribution that produced completion token t.
        lp, ent = _full_softmax_stats(model, text_prompt + completion[b, :n].tolist(), n)
        torch.testing.assert_close(t_logps[b, :n], lp, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t_ent[b, :n], ent, atol=1e-5, rtol=1e-5)
        # ... and of the policy, with the audio, for the same token.
        if family == "qwen2_audio":  # single-row audio inputs are easy to rebuild for Qwen2-Audio
            row_feats = {k: v[b : b + 1] for k, v in features.items()}
            lp, ent = _full_softmax_stats(model, prompt + completion[b, :n].tolist(), n, **row_feats)
            torch.testing.assert_close(p_logps[b, :n], lp, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(p_ent[b, :n], ent, atol=1e-5, rtol=1e-5)
    # The audio matters to the policy, so the reference differs where it should.
    assert (p_ent - t_ent).abs()[cmask.bool()].max() > 1e-5  # far above float error (~1e-7)
