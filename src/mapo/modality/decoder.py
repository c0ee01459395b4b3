"""Where a model's language-model decoder lives, and how to switch only its attention implementation.

The location is a per-family fact of :class:`~mapo.modality.ModalitySpec` (:func:`decoder_at` follows its paths);
:func:`locate_decoder` discovers it for other models (plain ``*ForCausalLM``, unknown families), through PEFT / DDP
wrappers. The probe (:mod:`mapo.probe`) uses the handle to install its attention implementation in the decoder
only, leaving the audio and vision encoders on theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["DecoderHandle", "decoder_at", "get_path", "locate_decoder", "unwrap_model"]

# Where to look when no ModalitySpec says where the decoder is (generic families only): the known families' specs
# carry their own paths (mapo.modality.spec), which :func:`decoder_at` follows.
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


def _is_decoder(module: Any) -> bool:
    return isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "config")


def decoder_at(
    model: nn.Module, language_model_path: str, owner_path: str = "", config_key: str | None = None
) -> DecoderHandle:
    """The decoder of ``model`` at the dotted paths a :class:`~mapo.modality.ModalitySpec` gives.

    ``language_model_path`` leads to the module holding ``.layers``; ``owner_path`` to the model whose
    ``set_attn_implementation`` switches it; ``config_key`` is the owner's sub-config of the decoder (``""``: the
    owner's own config; ``None``: find it). Paths are relative to the model without its PEFT / DDP wrappers.
    """
    model = unwrap_model(model)
    try:
        lm = get_path(model, language_model_path)
        owner = get_path(model, owner_path)
    except AttributeError as err:
        raise ValueError(
            f"{type(model).__name__} has no module at language_model_path={language_model_path!r} / "
            f"attn_owner_path={owner_path!r} ({err}). Fix these fields of the ModalitySpec, or set "
            "language_model_path=None to discover the decoder."
        ) from None
    if not _is_decoder(lm):
        raise ValueError(
            f"{type(model).__name__}.{language_model_path} is a {type(lm).__name__} without `.layers` and `.config`: "
            "language_model_path must lead to the decoder stack (the module whose .layers are the decoder layers)"
        )
    return _handle(owner, lm, config_key)


def _handle(owner: nn.Module, lm: nn.Module, config_key: str | None) -> DecoderHandle:
    if config_key is not None:
        sub = owner.config if config_key == "" else getattr(owner.config, config_key, None)
        if sub is not lm.config:
            raise ValueError(
                f"attn_config_key={config_key!r}: that config of {type(owner).__name__} is not the config of its "
                f"decoder {type(lm).__name__}. Fix the ModalitySpec's attn_config_key (or set it to None to find it)."
            )
        return DecoderHandle(owner, config_key, lm)
    if lm.config is owner.config:
        return DecoderHandle(owner, "", lm)
    for key in getattr(owner.config, "sub_configs", {}):
        if getattr(owner.config, key, None) is lm.config:
            return DecoderHandle(owner, key, lm)
    raise ValueError(
        f"the decoder config of {type(lm).__name__} is neither the config of {type(owner).__name__} nor one of "
        f"its sub-configs, so its attention implementation cannot be switched on its own"
    )


def locate_decoder(model: nn.Module) -> DecoderHandle:
    """Find the language-model decoder of ``model`` (Qwen2-Audio, Omni thinker or full Omni model, PEFT-wrapped
    or not, a plain ``*ForCausalLM``) and the sub-config key that selects its attention implementation.

    This is the discovery used when no family fact sheet gives the location (a generic
    :class:`~mapo.modality.ModalitySpec`); :func:`mapo.modality.resolve_decoder` prefers the spec.
    """
    model = unwrap_model(model)
    owner = model.thinker if isinstance(getattr(model, "thinker", None), nn.Module) else model
    for path in _DECODER_PATHS:
        try:
            lm = get_path(model, path)
        except AttributeError:
            continue
        if _is_decoder(lm):
            break
    else:
        raise ValueError(
            f"could not find the language-model decoder of {type(model).__name__}: looked for a module with "
            f"`.layers` at {[p or '<model>' for p in _DECODER_PATHS]}. Pass a model with one of these layouts, or "
            "a ModalitySpec whose language_model_path / attn_owner_path say where it is."
        )
    return _handle(owner, lm, None)
