"""The TRL 1.16 internals the audio trainers rely on still exist with the parameters we use.

TRL rewrites GRPO between minor releases (its PAPO trainer was removed because copies of GRPO internals broke at
every rewrite). We override a few private hooks instead of copying; this test fails first when one of them moves.
"""

from __future__ import annotations

import inspect

import trl
from trl import GRPOTrainer

from mapo.trainer import AudioGRPOTrainer, MAPOTrainer

# method -> parameters we call it with or receive (in order, after self)
OVERRIDDEN = {
    "_tokenize_prompts": ["prompts"],
    "_generate_and_score_completions": ["inputs"],
    "_compute_loss": ["model", "inputs"],
    "_calculate_rewards": ["inputs", "prompts", "completions", "completion_ids_list"],
    "_get_per_token_logps_and_entropies": [
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ],
}


def test_trl_version_is_the_tested_one():
    assert trl.__version__.startswith("1.16."), trl.__version__


def test_overridden_private_methods_exist_with_our_parameters():
    for name, params in OVERRIDDEN.items():
        method = getattr(GRPOTrainer, name, None)
        assert method is not None, f"GRPOTrainer.{name} is gone"
        got = [p for p in inspect.signature(method).parameters if p != "self"]
        assert got[: len(params)] == params, f"GRPOTrainer.{name}{got} no longer starts with {params}"
        # and our overrides really are overrides
        assert name in AudioGRPOTrainer.__dict__ or name in MAPOTrainer.__dict__


def test_helpers_we_import_from_trl_exist():
    from trl.models import prepare_deepspeed, prepare_fsdp
    from trl.trainer.utils import add_fused_lm_head, use_adapter

    assert "outputs" in inspect.signature(add_fused_lm_head).parameters
    assert list(inspect.signature(use_adapter).parameters) == ["model", "adapter_name"]
    assert callable(prepare_deepspeed) and callable(prepare_fsdp)


def test_trl_source_facts_we_depend_on():
    """Facts read in grpo_trainer.py that the overrides assume (see design.md §5)."""
    src = inspect.getsource(GRPOTrainer)
    # (B, T) advantages are accepted as is (ω̃ is folded into them).
    assert "if advantages.dim() == 1:" in src
    # the image-token suppression that crashes for Qwen2-Audio and that AudioGRPOTrainer works around
    assert 'generation_kwargs["suppress_tokens"] = [model.config.image_token_id]' in src
    # the training forward is one call per micro-batch without chunking (one probe capture per forward)
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    assert "self._get_per_token_logps_and_entropies(\n            model,\n            input_ids," in loss_src
    assert "batch_size=" not in loss_src.split("self._get_per_token_logps_and_entropies(")[1].split(")")[0]
    # the training forward computes entropies, and the advantages are read only after it: MAPOTrainer folds ω̃
    # (from the live entropies) into inputs["advantages"] between the two.
    forward_at = loss_src.index("self._get_per_token_logps_and_entropies(")
    assert "compute_entropy=True" in loss_src[forward_at : forward_at + 400]
    assert 'inputs["advantages"]' not in loss_src[:forward_at]
    assert loss_src.index('advantages = inputs["advantages"]') > forward_at
    # loss_type="grpo" aggregation is the per-sequence mean of eq. 2
    assert "((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()" in loss_src
    # the reference model is built in __init__ only when beta != 0 (AudioGRPOTrainer builds its own)
    init_src = inspect.getsource(GRPOTrainer.__init__)
    assert "self.beta = args.beta\n        if self.beta == 0.0:" in init_src
