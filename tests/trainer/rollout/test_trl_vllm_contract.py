"""The TRL 1.16 vLLM internals the audio rollouts rely on (fails first when TRL moves them; no vLLM needed)."""

from __future__ import annotations

import inspect

import trl.trainer.grpo_trainer as grpo_module
from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration

from mapo.trainer import AudioGRPOTrainer


def _params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_grpo_trainer_builds_its_engine_from_the_module_name_we_swap():
    assert grpo_module.VLLMGeneration is VLLMGeneration
    assert "self.vllm_generation = VLLMGeneration(" in inspect.getsource(GRPOTrainer.__init__)


def test_hooks_we_wrap_keep_their_parameters():
    assert _params(GRPOTrainer._generate_single_turn)[:4] == [
        "prompt_ids",
        "images",
        "multimodal_fields",
        "num_generations",
    ]
    assert _params(VLLMGeneration.generate) == ["prompts", "images", "num_generations", "profiler"]
    for name in ("_init_vllm", "_iter_named_params", "sync_weights"):
        assert _params(getattr(VLLMGeneration, name)) == []
    source = inspect.getsource(GRPOTrainer._generate_single_turn)
    assert "self.vllm_generation.sync_weights()" in source and "self.vllm_generation.generate(" in source
    for name in ("_tokenize_prompts", "_generate_single_turn", "_generate_and_score_completions"):
        assert any(name in cls.__dict__ for cls in AudioGRPOTrainer.__mro__[:-1] if cls is not GRPOTrainer)


def test_the_drift_check_reads_these_output_keys():
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for key in ("old_per_token_logps", "sampling_per_token_logps"):
        assert f'output["{key}"] = {key}' in source, key
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert f'"{key}": {key},' in source, key
    # colocate LLM construction goes through the module-level name the engine overrides
    assert "self.llm = LLM(" in inspect.getsource(VLLMGeneration._init_vllm)
