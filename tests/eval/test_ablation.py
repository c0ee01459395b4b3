"""`--ablate-audio`: the inputs the model gets (features of silence, noise of the clip's RMS, no audio part) and the
per-category reliance report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mapo.eval import GenerationSettings, Prediction, encode_prompts
from mapo.eval.ablation import ablate_clips, ablation_report
from mapo.eval.items import EvalItem


@pytest.fixture(scope="module")
def tiny():
    from mapo.testing import tiny_qwen2_audio, tiny_qwen2_audio_processor

    processor = tiny_qwen2_audio_processor()
    return tiny_qwen2_audio(tokenizer=processor.tokenizer), processor


def _item(i=0):
    return EvalItem(f"it{i}", "mmau", "sound", "choice", ["x.wav"], "Which?", ["violin", "piano"], "piano")


def test_silence_gives_the_features_of_silence_not_of_the_clip(tiny):
    from mapo.testing import sine_clip

    model, processor = tiny
    clip = sine_clip(440.0, seconds=0.7)
    item = _item()
    settings = GenerationSettings()
    real = encode_prompts(model, processor, [item], settings, clips=[[clip]]).inputs
    silent = encode_prompts(
        model, processor, [item], settings, clips=[ablate_clips("silence")(item, [clip])]
    ).inputs
    # Independent: the feature extractor on a zero waveform of the clip's length.
    expected = processor.feature_extractor(
        [np.zeros(clip.shape, np.float32)],
        sampling_rate=16000,
        return_attention_mask=True,
        return_tensors="pt",
    )
    torch.testing.assert_close(silent["input_features"], expected["input_features"])
    torch.testing.assert_close(silent["feature_attention_mask"], expected["attention_mask"])
    assert not torch.allclose(real["input_features"], silent["input_features"])
    assert torch.equal(real["input_ids"], silent["input_ids"])  # same prompt, same number of audio tokens


def test_noise_has_the_clip_rms_and_drop_removes_the_audio(tiny):
    from mapo.testing import sine_clip

    model, processor = tiny
    clip = sine_clip(300.0, seconds=0.5)
    item = _item()
    (noise,) = ablate_clips("noise", seed=3)(item, [clip])
    assert noise.shape == clip.shape and noise.dtype == np.float32
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(np.sqrt(np.mean(clip**2)), rel=0.05)
    np.testing.assert_array_equal(noise, ablate_clips("noise", seed=3)(item, [clip])[0])  # reproducible
    dropped = encode_prompts(
        model, processor, [item], GenerationSettings(), clips=[ablate_clips("drop")(item, [clip])]
    )
    audio_id = model.config.audio_token_index
    assert "input_features" not in dropped.inputs and not (dropped.inputs["input_ids"] == audio_id).any()
    with pytest.raises(ValueError, match="must be one of"):
        ablate_clips("mute")


def _pred(i, category, score):
    p = Prediction.from_item(EvalItem(f"i{i}", "mmau", category, "choice", [], "q", ["a", "b"], "a"), "")
    p.score = score
    return p


def test_ablation_report_counts_by_hand():
    # sound: with audio 1,1,0,1 ; without 1,0,0,0  -> 75 % vs 25 %; of the 3 right with audio, 1 stays right.
    # music: with 1,0 ; without 1,1 -> 50 % vs 100 %; item 5 is unscored without audio and leaves both runs.
    cats = ["sound"] * 4 + ["music"] * 3
    with_audio = [_pred(i, c, s) for i, (c, s) in enumerate(zip(cats, [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]))]
    without = [_pred(i, c, s) for i, (c, s) in enumerate(zip(cats, [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, None]))]
    rep = ablation_report(with_audio, without)["mmau"]
    assert rep["sound"] == {
        "n": 4,
        "accuracy_with_audio": 0.75,
        "accuracy_without_audio": 0.25,
        "correct_without_audio_share": 0.25,
        "still_correct_without_audio": pytest.approx(1 / 3),
    }
    assert rep["music"]["n"] == 2 and rep["music"]["accuracy_without_audio"] == 1.0
    assert rep["overall"]["n"] == 6 and rep["overall"]["accuracy_with_audio"] == pytest.approx(4 / 6)
