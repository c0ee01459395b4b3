"""LoRA that reaches every weight it is meant to, including the fused MoE experts of Qwen3-Omni.

In transformers 5 the Qwen3-Omni-MoE thinker (like Qwen3-MoE, Mixtral, ...) stores each layer's experts as two
fused ``nn.Parameter`` stacks, ``mlp.experts.gate_up_proj`` ``[E, 2·I, H]`` and ``mlp.experts.down_proj``
``[E, H, I]``, not as ``nn.Linear`` modules. A LoRA config naming ``gate_proj`` / ``up_proj`` / ``down_proj`` in
``target_modules`` therefore matches nothing in the MoE layers and peft says nothing (other targets matched), so
only attention trains. peft ≥ 0.17 targets parameters directly: ``LoraConfig(target_parameters=[...])`` wraps each
stack in ``lora.ParamWrapper``, a per-expert low-rank delta ``W_e + (α/r)·B_e A_e`` applied through
``torch.nn.utils.parametrize`` on every forward (peft 0.21: ``peft/tuners/lora/layer.py``). Its restrictions:
``lora_dropout`` must be 0 (dropout cannot be factored out of a weight delta), no DoRA, no bias.

This module:

* :func:`fused_expert_parameters`: the fused expert stacks of a model (3-D parameters of a module with
  ``num_experts``), by name;
* :func:`check_lora` (called by :class:`~mapo.trainer.AudioGRPOTrainer`): refuses a LoRA config whose listed
  targets match nothing, or which leaves every fused expert stack of an MoE model without an adapter, with the fix;
* :func:`with_expert_rank`: a separate rank / α for the expert stacks (``rank_pattern``), because rank r per
  expert multiplies the adapter size by E (128 experts × 48 layers on Qwen3-Omni-30B-A3B);
* :func:`merged_weights`: the merged weights ``W + ΔW`` computed out of place (the model is not touched), in
  transformers' in-memory layout or in the checkpoint layout (per-expert ``gate_proj`` / ``up_proj`` /
  ``down_proj``), e.g. for pushing weights to an inference engine. ``merge_and_unload()`` (what ``mapo train``
  saves under ``OUTPUT_DIR/merged``) merges the expert adapters too; ``tests/trainer/test_lora.py`` checks both.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "check_lora",
    "expert_target_parameters",
    "fused_expert_parameters",
    "merged_weights",
    "with_expert_rank",
]

_BASE_LAYER = re.compile(r"\.base_layer(?=\.|$)")


def _strip(name: str) -> str:
    """A peft-wrapped name without the ``.base_layer`` hops (``experts.base_layer.base_layer.w`` → ``experts.w``)."""
    return _BASE_LAYER.sub("", name)


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _shape(param: torch.Tensor) -> tuple[int, ...]:
    # Under DeepSpeed ZeRO-3 a parameter is partitioned (empty shape); its real shape is in `ds_shape`.
    return tuple(getattr(param, "ds_shape", param.shape))


def fused_expert_parameters(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Fused MoE expert stacks of ``model`` (or of a PeftModel's base): name → shape ``(E, out, in)``.

    An expert stack is a 3-D parameter whose first dimension is ``num_experts`` of the module holding it (the
    layout transformers 5 uses for Qwen3-MoE / Qwen3-Omni-MoE, Mixtral, ...). Names are relative to the base model,
    without peft's ``.base_layer`` hops, e.g. ``model.language_model.layers.0.mlp.experts.gate_up_proj``.
    """
    found: dict[str, tuple[int, ...]] = {}
    for module_name, module in _base(model).named_modules():
        n_experts = getattr(module, "num_experts", None)
        if not isinstance(n_experts, int) or n_experts < 2:
            continue
        for param_name, param in module.named_parameters(recurse=False):
            shape = _shape(param)
            if len(shape) == 3 and shape[0] == n_experts:
                found[_strip(f"{module_name}.{param_name}")] = shape
    return found


def expert_target_parameters(model: torch.nn.Module) -> list[str]:
    """The ``target_parameters`` entries that reach every fused expert stack of ``model``: the last three name parts
    (``mlp.experts.gate_up_proj``, ``mlp.experts.down_proj`` for Qwen3-Omni). Empty for a dense model."""
    return sorted({".".join(name.split(".")[-3:]) for name in fused_expert_parameters(model)})


def _matches(name: str, target: str) -> bool:
    """peft's suffix rule for list targets (``check_target_module_exists``, ``_inject_parameters``)."""
    return name == target or name.endswith("." + target)


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return None  # a regex or "all-linear": peft resolves it itself and refuses when it matches nothing
    return list(value)


def _target_parameters_yaml(targets: list[str]) -> str:
    return "[" + ", ".join(targets) + "]"


def check_lora(model: torch.nn.Module, peft_config=None) -> None:
    """Refuse a LoRA set-up that silently trains less than it says (called by the audio trainers' ``__init__``).

    With ``peft_config`` (a ``LoraConfig`` about to be applied to ``model``), raises ``ValueError`` when

    * an entry of a list ``target_modules`` or ``target_parameters`` matches no module / parameter of ``model``
      (e.g. ``gate_proj`` on an MoE model whose experts are fused: it matches nothing and peft stays silent);
    * ``model`` has fused MoE expert stacks and ``target_parameters`` reaches none of them (only attention and
      the dense parts would train);
    * ``target_parameters`` is set with ``lora_dropout`` ≠ 0 (peft's ParamWrapper cannot apply dropout).

    Some but not all expert stacks covered is a warning (it may be deliberate). Without ``peft_config``, a model
    that already carries peft adapters is checked the same way: every fused expert stack must have an adapter.
    Other peft methods than LoRA are not checked.
    """
    if peft_config is None:
        if hasattr(model, "peft_config"):
            _check_applied(model)
        return
    from peft import LoraConfig

    if not isinstance(peft_config, LoraConfig):
        return
    base = _base(model)
    cls = type(base).__name__
    problems: list[str] = []
    module_names = [_strip(n) for n, _ in base.named_modules()]
    param_names = [_strip(n) for n, _ in base.named_parameters()]
    experts = fused_expert_parameters(base)
    expert_fix = _target_parameters_yaml(expert_target_parameters(base))

    targets = _as_list(peft_config.target_modules)
    if targets:
        unmatched = sorted(t for t in targets if not any(_matches(n, t) for n in module_names))
        if unmatched:
            why = (
                f" {cls} stores its MoE experts as fused parameters, so there are no per-expert gate_proj / "
                f"up_proj / down_proj modules: target them with lora_target_parameters: {expert_fix} "
                "(LoraConfig(target_parameters=...)) instead."
                if experts
                else ""
            )
            problems.append(
                f"lora_target_modules {unmatched} match no module of {cls}: remove them or correct their names."
                + why
            )
    param_targets = _as_list(peft_config.target_parameters) or []
    unmatched_p = [t for t in param_targets if not any(_matches(n, t) for n in param_names)]
    if unmatched_p:
        hint = (
            f" Its fused expert stacks are reached by {expert_fix}."
            if experts
            else f" {cls} has no fused MoE experts."
        )
        problems.append(f"lora_target_parameters {unmatched_p} match no parameter of {cls}.{hint}")
    if param_targets and peft_config.lora_dropout:
        problems.append(
            f"lora_dropout={peft_config.lora_dropout} with lora_target_parameters: peft's ParamWrapper applies LoRA as "
            "a weight delta, from which dropout on the input cannot be factored out, so it refuses any dropout. "
            "Set lora_dropout: 0.0."
        )
    if experts:
        covered = [n for n in experts if any(_matches(n, t) for t in param_targets)]
        if not covered:
            first = next(iter(experts))
            problems.append(
                f"{cls} is a mixture-of-experts model whose {len(experts)} expert weight stacks (e.g. {first} "
                f"{list(experts[first])}) are fused nn.Parameters: LoRA target_modules never reach them, and this "
                "config's target_parameters match none of them, so the experts (most of the model's weights) "
                f"would get no adapter. Add lora_target_parameters: {expert_fix} and lora_dropout: 0.0 (YAML), i.e. "
                f"LoraConfig(target_parameters={expert_target_parameters(base)}, lora_dropout=0.0); see "
                "configs/qwen3_omni_30b_a3b_thinking_phase1_lora.yaml. To train the experts fully, use full "
                "fine-tuning (use_peft: false)."
            )
        elif len(covered) < len(experts):
            missing = sorted(set(experts) - set(covered))
            warnings.warn(
                f"LoRA reaches {len(covered)} of {len(experts)} fused expert stacks of {cls}; without an adapter: "
                f"{missing[:4]}{' ...' if len(missing) > 4 else ''}. For all of them: lora_target_parameters: "
                f"{expert_fix}.",
                stacklevel=2,
            )
        else:
            logger.info("LoRA reaches all %d fused expert stacks of %s", len(experts), cls)
    if problems:
        raise ValueError("LoRA config does not fit the model:\n- " + "\n- ".join(problems))


def _check_applied(model: torch.nn.Module) -> None:
    """A model that already carries adapters: every fused expert stack must have a trainable one."""
    experts = fused_expert_parameters(model)
    if not experts:
        return
    adapted = set()
    for name, module in _base(model).named_modules():
        if type(module).__name__ == "ParamWrapper" and any(
            p.requires_grad for p in module.lora_A.parameters()
        ):
            adapted.add(_strip(f"{name}.{module.parameter_name}"))
    missing = sorted(set(experts) - adapted)
    if len(missing) == len(experts):
        raise ValueError(
            f"The peft model's adapters reach none of its {len(experts)} fused MoE expert stacks (e.g. {missing[0]}), "
            f"so the experts would not train. Build it with target_parameters={expert_target_parameters(model)} "
            "and lora_dropout=0.0, or pass the base model and a peft_config to the trainer."
        )
    if missing:
        warnings.warn(
            f"The peft model's adapters reach {len(experts) - len(missing)} of {len(experts)} fused expert stacks; "
            f"without one: {missing[:4]}{' ...' if len(missing) > 4 else ''}",
            stacklevel=2,
        )


def with_expert_rank(peft_config, r: int | None = None, alpha: int | None = None):
    """``peft_config`` with rank ``r`` and scale numerator ``alpha`` for its ``target_parameters`` (the expert
    stacks) through peft's ``rank_pattern`` / ``alpha_pattern``; the other targets keep ``r`` / ``lora_alpha``.

    peft gives a ``target_parameters`` stack of E experts rank r *per expert* (``lora_A`` ``[r·E, in]``), so the
    adapter is E times a dense one's: at r 128 on Qwen3-Omni-30B-A3B the experts alone would carry about 5.0 B
    trainable parameters. peft 0.21 warns that these pattern keys "did not match any targeted module": its check
    looks at modules only; the ranks are applied to the parameters (``tests/trainer/test_lora.py``).
    """
    if r is None and alpha is None:
        return peft_config
    if peft_config is None:
        raise ValueError("lora_expert_r / lora_expert_alpha need LoRA: set use_peft: true (or drop them)")
    targets = _as_list(getattr(peft_config, "target_parameters", None)) or []
    if not targets:
        raise ValueError(
            "lora_expert_r / lora_expert_alpha set but lora_target_parameters is empty: there are no expert stacks "
            "to give a separate rank (add lora_target_parameters, or drop lora_expert_r / lora_expert_alpha)"
        )
    for t in targets:
        if r is not None:
            peft_config.rank_pattern[re.escape(t)] = r
        if alpha is not None:
            peft_config.alpha_pattern[re.escape(t)] = alpha
    return peft_config


def _lora_layers(model: torch.nn.Module):
    from peft.tuners.lora import LoraLayer

    for name, module in _base(model).named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


@torch.no_grad()
def merged_weights(
    model: torch.nn.Module, *, checkpoint_format: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every base weight of a peft LoRA model with its active adapters merged, ``W + ΔW``, computed out of place.

    The model is left unchanged, so repeated calls (one per weight sync) do not accumulate the rounding of an
    in-place merge/unmerge in bf16 into the frozen base weights. LoRA factors are not yielded. Names are the base
    model's (``model.language_model.layers.0.mlp.experts.gate_up_proj``); with ``checkpoint_format=True`` they are
    converted back to the checkpoint layout by transformers' own ``revert_weight_conversion`` (what
    ``save_pretrained`` writes: one ``...mlp.experts.{e}.gate_proj.weight`` / ``up_proj`` / ``down_proj`` per
    expert), one tensor group at a time, so peak extra memory is one merged stack. Works for a plain model too.
    """
    base = _base(model)
    deltas: dict[str, list[tuple[Any, str]]] = {}
    for name, layer in _lora_layers(model):
        if layer.merged:
            continue  # already in the base weight
        pname = getattr(layer, "parameter_name", None) or "weight"
        key = _strip(f"{name}.{pname}")
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A:
                deltas.setdefault(key, []).append((layer, adapter))
    adapter_param = re.compile(r"\.(lora_[A-Za-z_]+|lora_magnitude_vector)\.")
    revert = None
    if checkpoint_format:
        from transformers.core_model_loading import revert_weight_conversion

        revert = revert_weight_conversion
    for name, param in base.named_parameters():
        if adapter_param.search(name + "."):
            continue
        key = _strip(name)
        value = param.detach()
        for layer, adapter in deltas.get(key, []):
            value = value + layer.get_delta_weight(adapter).to(value.dtype)
        if revert is None:
            yield key, value
        else:
            yield from revert(base, {key: value}).items()
