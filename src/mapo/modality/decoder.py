"""Where a model's language-model decoder lives, and how to switch only its attention implementation.

Works for Qwen2-Audio, the Omni thinkers, full Omni models (``.thinker``), plain ``*ForCausalLM`` models, and their
PEFT / DDP wrappers. The probe (:mod:`mapo.probe`) uses it to install its attention implementation in the decoder
only, leaving the audio and vision encoders on theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["DecoderHandle", "get_path", "locate_decoder", "unwrap_model"]

_DECODER_PATHS = ("thinker.model.language_model", "model.language_model", "language_model", "model", "")


def get_path(obj: Any, path: str) -> Any:
    for name in filter(None, path.split(".")):
        obj = getattr(obj, name)
    return obj


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/DeepSpeed (``.module``) and PEFT (``get_base_model``) wrappers."""
    for _ in range(4):
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module) and not hasattr(model, "config"):
            model = model.module
        else:
            break
    return model


@dataclass(frozen=True)
class DecoderHandle:
    """Where a model's language-model decoder lives and how to switch its attention implementation.

    ``owner.set_attn_implementation({config_key: name})`` (or the plain string when ``config_key == ""``) changes
    only the decoder, never the audio/vision encoders.
    """

    owner: nn.Module
    config_key: str
    language_model: nn.Module

    @property
    def layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.language_model.layers)

    @property
    def implementation(self) -> str:
        """The decoder's current attention implementation."""
        return self.language_model.config._attn_implementation

    def set_implementation(self, name: str) -> None:
        self.owner.set_attn_implementation(name if self.config_key == "" else {self.config_key: name})
        if self.implementation != name:  # transformers only warns when it cannot switch a sub-model
            raise RuntimeError(
                f"could not switch the attention implementation of {type(self.language_model).__name__} to "
                f"{name!r} (it is {self.implementation!r})"
            )


def locate_decoder(model: nn.Module) -> DecoderHandle:
    """Find the language-model decoder of ``model`` (Qwen2-Audio, Omni thinker or full Omni model, PEFT-wrapped
    or not, a plain ``*ForCausalLM``) and the sub-config key that selects its attention implementation."""
    model = unwrap_model(model)
    owner = model.thinker if isinstance(getattr(model, "thinker", None), nn.Module) else model
    for path in _DECODER_PATHS:
        try:
            lm = get_path(model, path)
        except AttributeError:
            continue
        if isinstance(getattr(lm, "layers", None), nn.ModuleList) and hasattr(lm, "config"):
            break
    else:
        raise ValueError(
            f"could not find the language-model decoder of {type(model).__name__}: looked for a module with "
            f"`.layers` at {[p or '<model>' for p in _DECODER_PATHS]}. Pass a model with one of these layouts."
        )
    if lm.config is owner.config:
        return DecoderHandle(owner, "", lm)
    for key in getattr(owner.config, "sub_configs", {}):
        if getattr(owner.config, key, None) is lm.config:
            return DecoderHandle(owner, key, lm)
    raise ValueError(
        f"the decoder config of {type(lm).__name__} is neither the config of {type(owner).__name__} nor one of "
        f"its sub-configs, so its attention implementation cannot be switched on its own"
    )
