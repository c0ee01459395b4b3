"""The Omni thinkers through the real vLLM CPU engine: GRPO and MAPO steps (colocate) on a tiny Qwen2.5-Omni thinker and
generation with audio for a tiny Qwen3-Omni thinker (its MoE expert sync cannot run on vLLM's CPU engine).

vLLM serves the Omni thinkers as the full Omni model, whose processor needs torchvision (a video processor); the
CPU torch build cannot load PyPI's torchvision, so a test-only stand-in is on the path (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from datasets import Dataset
from trl import GRPOConfig

from mapo.modality import load_policy_model, resolve_modality
from mapo.testing import save_tiny_omni_for_vllm, sine_clip, tiny_omni_processor
from mapo.trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def torchvision_stand_in():
    """The stand-in is put on the path by tests/conftest.py, before transformers is imported."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        pytest.skip(
            "the Omni processors need torchvision or the test stand-in (tests/conftest.py puts it on the path)"
        )


@pytest.mark.parametrize("trainer_cls", [AudioGRPOTrainer, MAPOTrainer], ids=["grpo", "mapo"])
def test_train_steps_qwen25_omni_thinker_colocate(
    tmp_path, trainer_cls, vllm_grpo_settings, length_reward, tone_rows, release_engine
):
    """Two steps: a weight sync before each step's generation, each checked by the drift check. MAPO runs without
    the IS correction, so the check scores the samples with its own forward (the audio must reach it)."""
    checkpoint = save_tiny_omni_for_vllm(str(tmp_path / "omni"), "qwen2_5_omni_thinker")
    settings = vllm_grpo_settings(tmp_path / "out", "colocate", max_steps=2)
    if trainer_cls is MAPOTrainer:
        args = MAPOConfig(
            **settings,
            pos_tagger="lexicon",
            accuracy_reward_name="length_reward",
            vllm_importance_sampling_correction=False,
        )
    else:
        args = GRPOConfig(**settings)
    args.vllm_llm_kwargs = {"enforce_eager": True}
    model = load_policy_model(checkpoint, args)  # the thinker, from the full Omni checkpoint vLLM loads too
    trainer = trainer_cls(
        model, [length_reward], args, Dataset.from_list(tone_rows(1)), processing_class=tiny_omni_processor()
    )
    try:
        assert trainer.vllm_generation.llm.llm_engine.model_config.model == checkpoint
        trainer.train()  # vLLM's prompt ids are checked against the trainer's processor inside
        assert trainer.vllm_generation.syncs == 2
        drifts = [
            log["vllm/sync_logp_drift"] for log in trainer.state.log_history if "vllm/sync_logp_drift" in log
        ]
        assert len(drifts) == 2 and all(0.0 < d < 0.02 for d in drifts), drifts
        if trainer_cls is AudioGRPOTrainer:
            logs = trainer.state.log_history[0]
            assert logs["vllm/sync_logp_drift"] == pytest.approx(
                logs["sampling/sampling_logp_difference/mean"], rel=1e-5
            )
    finally:
        release_engine(trainer)


def test_qwen3_omni_thinker_generates_with_audio(tmp_path, monkeypatch, free_port):
    import torch
    from vllm import LLM, SamplingParams

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", str(free_port()))

    from mapo.trainer.rollout import build_requests
    from mapo.trainer.rollout.engine import limit_mm_per_prompt

    checkpoint = save_tiny_omni_for_vllm(str(tmp_path / "q3"), "qwen3_omni_moe_thinker")
    model = load_policy_model(checkpoint)
    processor = tiny_omni_processor()
    spec = resolve_modality(model, tokenizer=processor.tokenizer)
    clips = [
        sine_clip(200.0, 1.0, seed=1),
        np.random.default_rng(4).standard_normal(16000).astype(np.float32) * 0.3,
    ]
    conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    # Qwen3-Omni's placeholder count: its own formula (13 tokens per 100 frames), from the 1 s clip's 100 frames
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import _get_feat_extract_output_lengths

    n = int(_get_feat_extract_output_lengths(torch.tensor([100])).item())
    before, after = text.split("<|audio_pad|>")
    ids = (
        processor.tokenizer(before, add_special_tokens=False)["input_ids"]
        + [spec.audio_token_id] * n
        + processor.tokenizer(after, add_special_tokens=False)["input_ids"]
    )
    llm = LLM(
        model=checkpoint,
        dtype="float32",
        enforce_eager=True,
        max_model_len=512,
        limit_mm_per_prompt=limit_mm_per_prompt(spec),
        distributed_executor_backend="external_launcher",
    )
    try:
        outs = llm.generate(
            build_requests([ids, ids], clips, spec),
            SamplingParams(temperature=0.0, max_tokens=6, logprobs=0),
            use_tqdm=False,
        )
    finally:
        del llm
    assert [list(o.prompt_token_ids) for o in outs] == [ids, ids]  # one placeholder re-expanded to n exactly
    first = [
        (o.outputs[0].token_ids, [next(iter(lp.values())).logprob for lp in o.outputs[0].logprobs])
        for o in outs
    ]
    # the audio conditions the rollout (on this tiny random thinker only its log-probs, by ~1e-5; the greedy tokens
    # differ on the tiny Qwen2-Audio: test_colocate)
    assert first[0] != first[1]
