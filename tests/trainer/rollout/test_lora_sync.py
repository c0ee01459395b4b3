"""LoRA weight sync with the real vLLM CPU engine: a GRPO step (colocate) on a tiny Qwen2-Audio with a PEFT LoRA
policy; vLLM gets the merged weights ``W + ΔW`` computed out of place (``mapo.trainer.lora.merged_weights``), so the
frozen base weights are never rounded by a merge/unmerge round trip. One engine for the module."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig

from mapo.testing import sine_clip, tiny_qwen2_audio_for_vllm
from mapo.trainer import AudioGRPOTrainer
from mapo.trainer.rollout.parity import policy_completion_logps, vllm_completion_logps

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def lora_trained(tmp_path_factory, vllm_grpo_settings, length_reward, tone_rows, release_engine):
    """An AudioGRPOTrainer (colocate) with a LoRA policy after one optimizer step."""
    model, processor = tiny_qwen2_audio_for_vllm()
    args = GRPOConfig(**vllm_grpo_settings(tmp_path_factory.mktemp("lora"), "colocate"))
    args.vllm_llm_kwargs = {"enforce_eager": True}
    # attention and MLP of the language model and the audio encoder (the audio embeddings change too)
    peft_config = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "fc1"],
    )
    trainer = AudioGRPOTrainer(
        model,
        [length_reward],
        args,
        Dataset.from_list(tone_rows(1)),
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.train()
    yield trainer, processor
    release_engine(trainer)


def test_grpo_step_with_a_lora_policy(lora_trained):
    trainer, _ = lora_trained
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert hasattr(model, "peft_config") and trainer.vllm_generation.syncs == 1
    logs = trainer.state.log_history[0]
    assert 0.0 < logs["vllm/sync_logp_drift"] < 0.02
    trained_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained_b and any(p.abs().max() > 0 for p in trained_b), "the step did not move the adapters"


def test_lora_sync_sends_merged_weights_out_of_place(lora_trained, audio_prompt_inputs):
    """After the step, a sync makes vLLM score a fixed completion like the LoRA policy within 1e-4 (fp32), and the
    base weights are bit-for-bit unchanged (an in-place merge/unmerge would round them)."""
    trainer, processor = lora_trained
    engine, spec = trainer.vllm_generation, trainer.modality
    model = trainer.accelerator.unwrap_model(trainer.model)
    clip = sine_clip(330.0, 1.0, seed=5)
    inputs = audio_prompt_inputs(processor, clip)
    prompt_ids = inputs["input_ids"][0].tolist()
    completion = processor.tokenizer("The answer is low.", add_special_tokens=False)["input_ids"]

    # before the sync vLLM holds the step-0 merge, B = 0: the base model
    stale = vllm_completion_logps(engine, prompt_ids, completion, clip, spec)
    with model.disable_adapter():
        base = policy_completion_logps(model, inputs, completion)
    assert torch.allclose(stale, base, atol=1e-4), (stale - base).abs().max()

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    engine.sync_weights()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if "lora_" not in n)
    assert not any(getattr(m, "merged", False) for m in model.modules())

    got = vllm_completion_logps(engine, prompt_ids, completion, clip, spec)
    want = policy_completion_logps(model, inputs, completion)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # the adapters matter: unmerged weights would fail the check above
    assert (want - base).abs().max() > 1e-3
