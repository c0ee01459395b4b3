"""The policy's weights in the layout vLLM loads: checkpoint names, full-Omni layout for the thinkers.

vLLM's model classes load *checkpoint* names, not the live parameter names of a transformers 5.x model
(``model.language_model.*`` live vs ``language_model.model.*`` on disk for Qwen2-Audio; per-expert tensors on disk vs
fused 3-D ``mlp.experts.gate_up_proj`` live for Qwen3-Omni). ``revert_weight_conversion`` — what ``save_pretrained``
uses — gives the checkpoint layout for every family. vLLM registers the Omni models only as the full Omni model
(``Qwen2_5OmniForConditionalGeneration`` reading ``hf_config.thinker_config``), so a trained thinker's names get the
``thinker.`` prefix of that checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Thinker model_type -> (full Omni model_type, the architecture vLLM registers for it).
OMNI_FULL_MODEL: dict[str, tuple[str, str]] = {
    "qwen2_5_omni_thinker": ("qwen2_5_omni", "Qwen2_5OmniForConditionalGeneration"),
    "qwen3_omni_moe_thinker": ("qwen3_omni_moe", "Qwen3OmniMoeForConditionalGeneration"),
}

#: Architectures vLLM serves for each family (what a directory's config.json must declare to be loaded as is).
VLLM_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "qwen2_audio": ("Qwen2AudioForConditionalGeneration",),
    "qwen2_5_omni": ("Qwen2_5OmniForConditionalGeneration", "Qwen2_5OmniModel"),
    "qwen3_omni_moe": ("Qwen3OmniMoeForConditionalGeneration",),
}


def _base_model(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def checkpoint_prefix(model: nn.Module) -> str:
    """The prefix vLLM's checkpoint names carry on top of the model's own checkpoint names (``thinker.`` for Omni)."""
    model_type = getattr(_base_model(model).config, "model_type", "")
    return "thinker." if model_type in OMNI_FULL_MODEL else ""


def to_vllm_names(
    model: nn.Module, named_tensors: Iterable[tuple[str, torch.Tensor]]
) -> list[tuple[str, torch.Tensor]]:
    """Rename live transformers tensors (``named_parameters()`` names, PEFT prefixes already removed) to the names
    of the checkpoint vLLM loads.

    ``revert_weight_conversion`` needs the whole state dict at once (MoE experts are split from one fused tensor),
    so the tensors are collected; they are views, not copies, except where the conversion splits or transposes.
    """
    from transformers.core_model_loading import revert_weight_conversion

    base = _base_model(model)
    state = dict(named_tensors)
    reverted = revert_weight_conversion(base, state)
    prefix = checkpoint_prefix(model)
    # a thinker loaded from a full Omni checkpoint reverts to its ``thinker.`` names already
    return [(name if name.startswith(prefix) else prefix + name, tensor) for name, tensor in reverted.items()]


def _has_lora(model: nn.Module) -> bool:
    return any(".lora_A." in name for name, _ in model.named_parameters())


def vllm_state_dict(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The model's parameters under vLLM's checkpoint names; a LoRA model's with its adapters merged (out of
    place, :func:`mapo.trainer.lora.merged_weights`)."""
    if _has_lora(model):
        from ..lora import merged_weights

        return to_vllm_names(model, merged_weights(model))
    return to_vllm_names(model, ((n, p.detach()) for n, p in _base_model(model).named_parameters()))


def _full_omni_config(thinker_config) -> dict:
    """A full-Omni ``config.json`` around ``thinker_config`` (what vLLM's Omni classes read).

    ``tie_word_embeddings`` is written out at every level with the thinker's real value: a missing key makes vLLM
    tie the LM head to the embeddings (1.37 nats off on an untied model).
    """
    full_type, architecture = OMNI_FULL_MODEL[thinker_config.model_type]
    thinker = thinker_config.to_dict()
    tie = bool(getattr(thinker_config.get_text_config(), "tie_word_embeddings", False))
    thinker["tie_word_embeddings"] = tie
    thinker.setdefault("text_config", {})["tie_word_embeddings"] = tie
    return {
        "model_type": full_type,
        "architectures": [architecture],
        "thinker_config": thinker,
        "enable_audio_output": False,
        "tie_word_embeddings": tie,
        "dtype": thinker.get("dtype", "float32"),
    }


def save_vllm_weights(named_tensors: Iterable[tuple[str, torch.Tensor]], directory: str) -> str:
    """Write vLLM-named tensors as ``model.safetensors`` in ``directory`` (the weights-only reload of server mode)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name, tensor in named_tensors:
        t = tensor.detach().to("cpu").contiguous()
        # safetensors refuses shared storage (tied weights): store a copy of the second name
        key = t.untyped_storage().data_ptr()
        if key in seen:
            t = t.clone()
        seen[t.untyped_storage().data_ptr()] = name
        tensors[name] = t
    path = os.path.join(directory, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def save_vllm_checkpoint(model: nn.Module, processor, directory: str) -> str:
    """Save ``model`` and ``processor`` as a checkpoint vLLM can load, and return the directory.

    Qwen2-Audio: ``save_pretrained`` (it writes the checkpoint layout). Omni thinkers: the full-Omni layout
    (``thinker.`` weights, a ``thinker_config``); the processor must then be the family's real Omni processor
    (``Qwen2_5OmniProcessor`` / ``Qwen3OmniMoeProcessor``), which vLLM's Omni code loads by class.
    """
    base = _base_model(model)
    model_type = base.config.model_type
    os.makedirs(directory, exist_ok=True)
    if model_type in OMNI_FULL_MODEL:
        expected = {
            "qwen2_5_omni_thinker": "Qwen2_5OmniProcessor",
            "qwen3_omni_moe_thinker": "Qwen3OmniMoeProcessor",
        }
        if type(processor).__name__ != expected[model_type]:
            raise ValueError(
                f"vLLM loads a {model_type} policy as the full Omni model, with the family's processor "
                f"({expected[model_type]}); got {type(processor).__name__}. Pass the model as the path of its full "
                "Omni checkpoint (the trainer then loads the thinker from it and vLLM the same directory)."
            )
        with open(os.path.join(directory, "config.json"), "w") as fh:
            json.dump(_full_omni_config(base.config), fh, indent=2)
        save_vllm_weights(vllm_state_dict(base), directory)
        base.generation_config.save_pretrained(directory)
    elif _has_lora(base):  # the adapters merged, under the base model's names
        from ..lora import merged_weights

        base.save_pretrained(directory, state_dict=dict(merged_weights(base)))
    else:
        base.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def is_vllm_loadable(directory: str | None) -> bool:
    """Whether ``directory`` holds a checkpoint whose ``config.json`` declares an architecture vLLM serves for the
    audio families (a thinker-only checkpoint does not: vLLM registers only the full Omni models)."""
    if not directory or not os.path.isfile(os.path.join(directory, "config.json")):
        return False
    with open(os.path.join(directory, "config.json")) as fh:
        config = json.load(fh)
    archs = config.get("architectures") or []
    wanted = VLLM_ARCHITECTURES.get(config.get("model_type", ""), ())
    if wanted:
        return any(a in wanted for a in archs)
    return bool(archs)  # another family: trust its declared architecture
