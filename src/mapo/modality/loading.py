"""Load the policy from a path with the class MAPO trains: the *thinker* of an Omni checkpoint.

TRL's own loader instantiates ``config.architectures[0]``, which for a full Qwen2.5-Omni / Qwen3-Omni checkpoint is
the talker-carrying generation wrapper, not a trainable causal LM. Here the thinker sub-config is loaded with the
thinker class; transformers' conversion mapping strips the ``thinker.`` weight prefix.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoConfig, PreTrainedModel

# Full Omni checkpoints → (thinker class path, attribute holding the thinker config).
_OMNI_THINKERS: dict[str, tuple[str, str]] = {
    "qwen2_5_omni": (
        "transformers.models.qwen2_5_omni.Qwen2_5OmniThinkerForConditionalGeneration",
        "thinker_config",
    ),
    "qwen3_omni_moe": (
        "transformers.models.qwen3_omni_moe.Qwen3OmniMoeThinkerForConditionalGeneration",
        "thinker_config",
    ),
}
_DIRECT: dict[str, str] = {
    "qwen2_audio": "transformers.Qwen2AudioForConditionalGeneration",
    "qwen2_5_omni_thinker": "transformers.models.qwen2_5_omni.Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe_thinker": "transformers.models.qwen3_omni_moe.Qwen3OmniMoeThinkerForConditionalGeneration",
}


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def _dtype(value: Any):
    if value in (None, "auto") or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and hasattr(torch, value):
        return getattr(torch, value)
    raise ValueError(f"model_init_kwargs['dtype']={value!r}: use 'auto', 'bfloat16', 'float16' or 'float32'")


def load_policy_model(name_or_path: str, args=None, **overrides: Any) -> PreTrainedModel:
    """Load ``name_or_path`` as a trainable audio LM (the thinker for Omni checkpoints).

    ``args.model_init_kwargs`` (TRL's field: ``dtype``, ``attn_implementation``, ``revision``...) and ``overrides``
    are passed to ``from_pretrained``; ``dtype`` defaults to float32, as in TRL. Under multi-process training the
    device map is left to accelerate.
    """
    kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    kwargs.update(overrides)
    kwargs["dtype"] = _dtype(kwargs.get("dtype", "float32"))
    if args is not None and getattr(args, "trust_remote_code", False):
        kwargs.setdefault("trust_remote_code", True)
    if args is not None and getattr(args, "world_size", 1) > 1:
        kwargs["device_map"] = None
    config = AutoConfig.from_pretrained(
        name_or_path, trust_remote_code=kwargs.get("trust_remote_code", False)
    )
    model_type = getattr(config, "model_type", None)
    if model_type in _OMNI_THINKERS:
        cls_path, attr = _OMNI_THINKERS[model_type]
        return _import(cls_path).from_pretrained(name_or_path, config=getattr(config, attr), **kwargs)
    if model_type in _DIRECT:
        return _import(_DIRECT[model_type]).from_pretrained(name_or_path, **kwargs)
    # Other audio LMs: the checkpoint's declared architecture (what TRL does).
    architectures = getattr(config, "architectures", None) or []
    if not architectures or not hasattr(transformers, architectures[0]):
        raise ValueError(
            f"{name_or_path}: cannot tell which model class to load (model_type={model_type!r}, "
            f"architectures={architectures}); load the model yourself and pass the instance to the trainer"
        )
    return getattr(transformers, architectures[0]).from_pretrained(name_or_path, **kwargs)
