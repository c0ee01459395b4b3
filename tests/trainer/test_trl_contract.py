"""The TRL protocol of the audio trainers (``mapo.trainer.protocol.TRL_PROTOCOL``) holds for the installed TRL.

TRL rewrites GRPO between minor releases (its PAPO trainer was removed because copies of GRPO internals broke at
every rewrite). We override a few hooks instead of copying; this test fails first when one of them moves. TRL's
code is read as a syntax tree (``ast``), so a reformatting of TRL changes nothing here; a change of what the code
does does.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import trl
from transformers import Trainer
from trl import GRPOTrainer

from mapo.trainer import AudioGRPOTrainer, MAPOTrainer
from mapo.trainer.protocol import TRL_PROTOCOL

OURS = {"AudioGRPOTrainer": AudioGRPOTrainer, "MAPOTrainer": MAPOTrainer}


def _tree(function) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def _code(node: ast.AST) -> str:
    """Canonical source of a node (formatting and quotes normalised by ``ast.unparse``)."""
    return ast.unparse(node)


def _calls(tree: ast.AST, method: str) -> list[ast.Call]:
    """Calls of ``self.<method>(...)`` in ``tree``, in source order."""
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _code(n.func) == f"self.{method}"]
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _subscripts(tree: ast.AST, text: str) -> list[ast.Subscript]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Subscript) and _code(n) == text]


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_trl_version_is_the_tested_one():
    assert trl.__version__.startswith(TRL_PROTOCOL.trl_version + "."), trl.__version__


def test_every_overridden_trl_method_is_a_hook_of_the_protocol():
    """Completeness: a method of ours that replaces one of GRPOTrainer's (or transformers' Trainer's) is listed,
    with the class that overrides it; a listed hook is really overridden."""
    hooks = {h.method: h for h in TRL_PROTOCOL.hooks}
    for owner, cls in OURS.items():
        overridden = {
            name
            for name, value in vars(cls).items()
            if callable(value)
            and hasattr(GRPOTrainer, name)
            and (name == "__init__" or not name.startswith("__"))
        }
        listed = {name for name, h in hooks.items() if owner in h.owners}
        assert overridden == listed, (
            f"{owner} overrides {sorted(overridden - listed)} that TRL_PROTOCOL does not list, and TRL_PROTOCOL "
            f"lists {sorted(listed - overridden)} that {owner} does not override"
        )


def test_each_hook_exists_in_trl_with_our_parameters():
    for hook in TRL_PROTOCOL.hooks:
        method = getattr(GRPOTrainer, hook.method, None)
        assert method is not None, f"GRPOTrainer.{hook.method} is gone"
        got = [p for p in inspect.signature(method).parameters if p != "self"]
        assert tuple(got[: len(hook.params)]) == hook.params, (
            f"GRPOTrainer.{hook.method}{got} no longer starts with {hook.params}"
        )


def test_generation_batch_order():
    """Inside one generation batch TRL tokenizes (through _generate), scores the old / reference log-probs and
    computes the rewards, all within _generate_and_score_completions: the audio trainers' pending audio and local
    rewards are read there."""
    tree = _tree(GRPOTrainer._generate_and_score_completions)
    assert _calls(tree, "_generate"), "_generate_and_score_completions no longer calls self._generate"
    assert _calls(_tree(GRPOTrainer._generate), "_tokenize_prompts"), "_generate no longer tokenizes"
    generate_at = _calls(tree, "_generate")[0].lineno
    scoring = _calls(tree, "_get_per_token_logps_and_entropies")
    rewards = _calls(tree, "_calculate_rewards")
    assert scoring and rewards
    assert all(c.lineno > generate_at for c in scoring + rewards)
    assert [_code(a) for a in rewards[0].args] == list(TRL_PROTOCOL.hook("_calculate_rewards").params)


def test_training_forward_comes_before_the_advantages_are_read():
    """MAPOTrainer folds ω̃ into inputs["advantages"] in the hook after the one training forward; TRL must read
    the advantages only after that forward, with entropies and without chunking (one probe capture)."""
    tree = _tree(GRPOTrainer._compute_loss)
    forwards = _calls(tree, "_get_per_token_logps_and_entropies")
    assert len(forwards) == 1, f"{len(forwards)} training forwards in _compute_loss"
    forward = forwards[0]
    assert [_code(a) for a in forward.args] == ["model", "input_ids", "attention_mask", "logits_to_keep"]
    entropy = _keyword(forward, "compute_entropy")
    assert isinstance(entropy, ast.Constant) and entropy.value is True
    assert _keyword(forward, "batch_size") is None
    reads = _subscripts(tree, "inputs['advantages']")
    assert reads and all(r.lineno > forward.end_lineno for r in reads)


def test_advantages_of_shape_b_t_are_kept():
    tree = _tree(GRPOTrainer._compute_loss)
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and _code(n.test) == "advantages.dim() == 1"]
    assert guards, "TRL no longer keeps (B, T) advantages as they are"


def test_grpo_loss_is_the_per_sequence_mean_of_eq_2():
    tree = _tree(GRPOTrainer._compute_loss)
    branches = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "'grpo'" in _code(n.test)]
    assert branches, "no loss_type == 'grpo' branch in _compute_loss"
    body = [_code(s) for s in branches[0].body]
    assert "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()" in body


def test_construction_facts():
    """AudioGRPOTrainer lends config.image_token_id during __init__ and builds its own KL reference."""
    tree = _tree(GRPOTrainer.__init__)
    suppress = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and any(_code(t) == "generation_kwargs['suppress_tokens']" for t in n.targets)
    ]
    assert suppress and _code(suppress[0].value) == "[model.config.image_token_id]"
    beta_set = [
        n for n in ast.walk(tree) if isinstance(n, ast.Assign) and _code(n) == "self.beta = args.beta"
    ]
    no_reference = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.If)
        and _code(n.test) == "self.beta == 0.0"
        and "self.ref_model = None" in _code(n)
    ]
    assert beta_set and no_reference and no_reference[0].lineno > beta_set[0].lineno


def test_resume_loads_weights_through_our_hook():
    """transformers' Trainer loads the checkpoint weights by calling _load_from_checkpoint(resume_from_checkpoint
    [, model]) from train(); AudioGRPOTrainer replaces the weight loading only."""
    calls = _calls(_tree(Trainer.train), "_load_from_checkpoint") + _calls(
        _tree(Trainer._inner_training_loop), "_load_from_checkpoint"
    )
    assert calls
    assert all(_code(c.args[0]) == "resume_from_checkpoint" for c in calls)


def test_helpers_we_import_from_trl_exist():
    from trl.models import prepare_deepspeed, prepare_fsdp
    from trl.trainer.utils import add_fused_lm_head, use_adapter

    assert "outputs" in inspect.signature(add_fused_lm_head).parameters
    assert list(inspect.signature(use_adapter).parameters) == ["model", "adapter_name"]
    assert callable(prepare_deepspeed) and callable(prepare_fsdp)
