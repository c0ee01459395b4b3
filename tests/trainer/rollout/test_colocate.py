"""Colocate mode with the real vLLM CPU engine: a MAPO step on a tiny Qwen2-Audio, weight sync parity, audio
conditioning and the drift check's negative control. One engine for the module (built with the trainer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from mapo.testing import sine_clip, tiny_qwen2_audio_for_vllm
from mapo.trainer import MAPOConfig, MAPOTrainer
from mapo.trainer.rollout import VLLMDriftError
from mapo.trainer.rollout.parity import policy_completion_logps, vllm_completion_logps

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vllm_grpo_settings, length_reward, tone_rows, release_engine):
    """A MAPOTrainer (colocate) after one optimizer step; the initial weights kept for comparison."""
    model, processor = tiny_qwen2_audio_for_vllm()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    args = MAPOConfig(
        **vllm_grpo_settings(tmp_path_factory.mktemp("colocate"), "colocate"),
        pos_tagger="lexicon",
        accuracy_reward_name="length_reward",
        vllm_llm_kwargs={"enforce_eager": True},
    )
    trainer = MAPOTrainer(
        model, [length_reward], args, Dataset.from_list(tone_rows(1)), processing_class=processor
    )
    trainer.train()
    yield trainer, processor, initial
    release_engine(trainer)


def test_mapo_step_with_colocated_vllm(trained):
    trainer, _, initial = trained
    engine = trainer.vllm_generation
    assert type(engine).__name__ == "AudioVLLMGeneration" and engine.weight_sync_mode == "colocate"
    assert engine.syncs == 1  # TRL syncs before the step's generation
    logs = trainer.state.log_history[0]
    # vLLM's log-probs of its own samples vs the trainer's, right after the sync: only the renormalised mass of the
    # suppressed placeholder/markers separates them (3 of 448 tokens on a near-uniform model: -log(1-3/448)=0.0067)
    assert 0.0 < logs["vllm/sync_logp_drift"] < 0.02
    assert logs["vllm/sync_logp_drift"] == pytest.approx(
        logs["sampling/sampling_logp_difference/mean"], rel=1e-5
    )
    assert np.isfinite(logs["loss"]) and logs["grad_norm"] > 0
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, initial[k])]
    assert changed, "the optimizer step changed no weight"


def test_synced_engine_matches_trainer_logps(trained, audio_prompt_inputs):
    """After the optimizer step and a sync, vLLM scores a fixed completion like the trained policy (fp32), even for
    a clip whose audio embedding vLLM cached under the old weights (the encoder cache is reset with the sync)."""
    trainer, processor, initial = trained
    engine, spec = trainer.vllm_generation, trainer.modality
    model = trainer.accelerator.unwrap_model(trainer.model)
    clip = sine_clip(330.0, 1.0, seed=5)
    inputs = audio_prompt_inputs(processor, clip)
    prompt_ids = inputs["input_ids"][0].tolist()
    completion = processor.tokenizer("The answer is low.", add_special_tokens=False)["input_ids"]

    # the engine still holds the weights of the step's start (synced before its generation): the initial ones
    stale = vllm_completion_logps(engine, prompt_ids, completion, clip, spec)  # caches the clip's embedding
    trained_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(initial)
    old = policy_completion_logps(model, inputs, completion)
    model.load_state_dict(trained_state)
    assert torch.allclose(stale, old, atol=1e-4), (stale - old).abs().max()

    engine.sync_weights()
    got = vllm_completion_logps(engine, prompt_ids, completion, clip, spec)
    want = policy_completion_logps(model, inputs, completion)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (old - want).abs().max() > 1e-3  # the comparison can tell synced from stale weights


def test_two_clips_give_different_rollouts_at_temperature_zero(trained, audio_prompt_inputs):
    """Greedy rollouts of the same text with two clips differ in their tokens. On the initial (random) weights: the
    step's toy length reward pushes the tiny policy into one repeated pair of tokens whatever it hears."""
    trainer, processor, initial = trained
    engine = trainer.vllm_generation
    model = trainer.accelerator.unwrap_model(trainer.model)
    clips = [
        sine_clip(200.0, 1.0, seed=1),
        np.random.default_rng(7).standard_normal(16000).astype(np.float32) * 0.5,
    ]
    ids = [audio_prompt_inputs(processor, c)["input_ids"][0].tolist() for c in clips]
    assert ids[0] == ids[1]  # same text, same length: only the audio differs
    trained_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(initial)
    engine.sync_weights()
    engine.temperature, saved = 0.0, engine.temperature
    try:
        with engine.audio_clips(clips):
            _, completions, _, _ = engine.generate(ids, None, num_generations=1)
        with engine.audio_clips(clips[:1] * 2):
            _, same, _, _ = engine.generate(ids, None, num_generations=1)
    finally:
        engine.temperature = saved
        model.load_state_dict(trained_state)
        engine.sync_weights()
    assert same[0] == same[1] == completions[0]  # greedy and deterministic for one clip
    assert completions[0] != completions[1]  # the audio, not only the text, decides the greedy rollout
    suppressed = {trainer.modality.audio_token_id, *trainer.modality.marker_ids}
    assert not suppressed & {t for c in completions for t in c}


def test_stale_weights_are_caught_by_the_drift_check(trained, monkeypatch):
    """Negative control: weights change but the sync is skipped -> the first generation after it fails loudly."""
    trainer, _, _ = trained
    engine = trainer.vllm_generation

    def no_sync():
        engine.syncs += 1  # the trainer believes it synced

    monkeypatch.setattr(engine, "sync_weights", no_sync)
    model = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # what a few large optimizer steps do to the sampled tokens' log-probs
    trainer._last_loaded_step = -1  # force TRL's "sync before generation"
    batch = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))] * 4
    try:
        with pytest.raises(VLLMDriftError, match="vllm_drift_tolerance"):
            trainer._generate_and_score_completions(batch)
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(4.0)
