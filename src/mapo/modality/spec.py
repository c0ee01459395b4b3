"""Per-model-family facts about the audio modality: one :class:`ModalitySpec` (fact sheet) per family.

MAPO needs these facts that differ between model families (paper §3.2-3.3):

* which key positions hold the audio (the placeholder id that the processor expands into one token per audio
  frame, optionally with its start/end markers) -> the set S_audio of §3.2;
* how the text-only prompt x_text of the reference model in Δh_t (§3.3) is made: the prompt with the audio
  placeholder run and its markers removed;
* where the language model's decoder layers live (the probe switches only their attention implementation) ->
  :meth:`ModalitySpec.decoder` / :func:`resolve_decoder`;
* which forward kwargs carry the audio features (every scoring forward passes exactly these) and the processor's
  limits (sampling rate, the longest clip it keeps).

:func:`resolve_modality` builds a :class:`ModalitySpec` from a model or config for Qwen2-Audio, the Qwen2.5-Omni
thinker and the Qwen3-Omni-MoE thinker (also given as the full Omni model/config); anything else uses
:meth:`ModalitySpec.generic` with explicit token ids (e.g. a vision model's image placeholder).

The tensors derived from a spec (:func:`audio_key_mask`, :func:`text_only_prompt`, the prompt + completion layout)
are in :mod:`mapo.modality.layout`; they are re-exported here, so ``from mapo.modality.spec import ...`` keeps
working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from .decoder import DecoderHandle, decoder_at, locate_decoder, unwrap_model
from .layout import (
    TEXT_ONLY_MODES,
    Concatenated,
    audio_key_mask,
    completion_query_mask,
    concat_prompt_completion,
    text_only_prompt,
)

logger = logging.getLogger(__name__)

__all__ = [
    "KNOWN_AUDIO_FEATURE_KWARGS",
    "TEXT_ONLY_MODES",
    "Concatenated",
    "DecoderHandle",
    "ModalitySpec",
    "audio_key_mask",
    "completion_query_mask",
    "concat_prompt_completion",
    "locate_decoder",
    "resolve_decoder",
    "resolve_modality",
    "text_only_prompt",
    "with_feature_kwargs",
    "with_markers",
]

#: Audio feature kwargs of the families we know (the processor outputs that carry the audio).
KNOWN_AUDIO_FEATURE_KWARGS: tuple[str, ...] = (
    "input_features",
    "feature_attention_mask",
    "input_features_mask",
    "audio_feature_lengths",
)

# model_type -> facts. ``*_attr`` name config attributes; ``marker_names`` are the tokenizer strings of the markers.
_FAMILIES: dict[str, dict[str, Any]] = {
    "qwen2_audio": {
        "id_attrs": ("audio_token_index", "audio_token_id"),
        "start_attr": None,  # <|audio_bos|> / <|audio_eos|> are not in the config: only a tokenizer knows them
        "end_attr": None,
        "marker_names": ("<|audio_bos|>", "<|audio_eos|>"),
        "feature_kwargs": ("input_features", "feature_attention_mask"),
        "max_audio_seconds": 30.0,  # WhisperFeatureExtractor keeps n_samples = 30 s x 16 kHz and drops the rest
    },
    "qwen2_5_omni_thinker": {
        "id_attrs": ("audio_token_index", "audio_token_id"),
        "start_attr": "audio_start_token_id",
        "end_attr": "audio_end_token_id",
        "marker_names": ("<|audio_start|>", "<|audio_end|>"),
        "feature_kwargs": ("input_features", "feature_attention_mask", "audio_feature_lengths"),
        "max_audio_seconds": 30.0,  # the processor's Whisper front-end truncates at 30 s without a warning
    },
    "qwen3_omni_moe_thinker": {
        "id_attrs": ("audio_token_id",),
        "start_attr": "audio_start_token_id",
        "end_attr": "audio_end_token_id",  # not a declared field of the 5.23 config; read when a checkpoint has it
        "marker_names": ("<|audio_start|>", "<|audio_end|>"),
        "feature_kwargs": ("input_features", "feature_attention_mask", "audio_feature_lengths"),
        "max_audio_seconds": 30.0,  # the processor's Whisper front-end truncates at 30 s without a warning
    },
}
_FULL_OMNI = {"qwen2_5_omni": "qwen2_5_omni_thinker", "qwen3_omni_moe": "qwen3_omni_moe_thinker"}


@dataclass(frozen=True)
class ModalitySpec:
    """Facts about one model family's audio (or any non-text) modality.

    Attributes:
        family: ``model_type`` of the (thinker) config, or ``"generic"``.
        audio_token_id: the placeholder id; the processor expands it into one token per audio frame (S_audio, §3.2).
        audio_start_token_id / audio_end_token_id: the markers around the run, ``None`` when unknown or absent.
        language_model_path: dotted path from the model to the decoder stack (the module holding ``.layers``);
            ``None`` = discover it (:func:`locate_decoder`).
        num_layers: decoder layers of the language model (``None`` when unknown).
        attn_config_key: sub-config of the attention owner whose implementation the probe switches
            (``"text_config"``; ``""`` = the owner's own config, e.g. a plain ``Qwen2ForCausalLM``); ``None`` =
            discover.
        attn_owner_path: dotted path to the model on which ``set_attn_implementation`` is called (``"thinker"`` for
            a full Omni model, ``""`` otherwise).
        audio_feature_kwargs: forward kwargs that carry the audio features; the text-only reference passes none.
        marker_names: tokenizer strings of the start/end markers (to look them up, and for messages).
        sampling_rate: the audio sampling rate the family's feature extractor expects (Hz).
        max_audio_seconds: the longest clip the family's processor keeps in one audio part; longer clips are
            truncated by the processor without a word, so readers apply an explicit long-audio policy.
            ``None`` = unknown (no length check).
    """

    family: str
    audio_token_id: int
    audio_start_token_id: int | None = None
    audio_end_token_id: int | None = None
    language_model_path: str | None = None
    num_layers: int | None = None
    attn_config_key: str | None = None
    attn_owner_path: str = ""
    audio_feature_kwargs: tuple[str, ...] = ()
    marker_names: tuple[str, str] | None = None
    sampling_rate: int = 16000
    max_audio_seconds: float | None = None

    @classmethod
    def generic(
        cls,
        audio_token_id: int,
        start: int | None = None,
        end: int | None = None,
        *,
        family: str = "generic",
        language_model_path: str | None = None,
        num_layers: int | None = None,
        attn_config_key: str | None = None,
        audio_feature_kwargs: tuple[str, ...] = (),
    ) -> ModalitySpec:
        """A spec from explicit token ids, for any family (a vision model's image placeholder works the same way).

        Example: ``ModalitySpec.generic(audio_token_id=151655, start=151652, end=151653)`` for Qwen2-VL images.
        The decoder and the attention sub-config are discovered from the model when left ``None``.
        """
        if not isinstance(audio_token_id, int) or isinstance(audio_token_id, bool):
            raise TypeError(f"audio_token_id must be an int token id, got {audio_token_id!r}")
        for name, value in (("start", start), ("end", end)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"{name} must be an int token id or None, got {value!r}")
        return cls(
            family=family,
            audio_token_id=audio_token_id,
            audio_start_token_id=start,
            audio_end_token_id=end,
            language_model_path=language_model_path,
            num_layers=num_layers,
            attn_config_key=attn_config_key,
            audio_feature_kwargs=tuple(audio_feature_kwargs),
        )

    @property
    def marker_ids(self) -> tuple[int, ...]:
        """The known marker ids (start and/or end)."""
        return tuple(i for i in (self.audio_start_token_id, self.audio_end_token_id) if i is not None)

    def decoder(self, model: nn.Module) -> DecoderHandle:
        """``model``'s decoder where this spec says it is (``language_model_path``, ``attn_owner_path``,
        ``attn_config_key``), or discovered (:func:`locate_decoder`) when ``language_model_path`` is ``None``."""
        if self.language_model_path is None:
            return locate_decoder(model)
        return decoder_at(model, self.language_model_path, self.attn_owner_path, self.attn_config_key)

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack of ``model`` (the module whose ``.layers`` are the decoder layers)."""
        return self.decoder(model).language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder layers of the language model inside ``model``."""
        return self.language_model(model).layers


# ----------------------------------------------------------------------------------------------------------------
# Resolution
# ----------------------------------------------------------------------------------------------------------------


def _token_id(tokenizer: Any, token: str | None) -> int | None:
    if tokenizer is None or token is None:
        return None
    if not hasattr(tokenizer, "convert_tokens_to_ids") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer  # a processor
    idx = tokenizer.convert_tokens_to_ids(token)
    if idx is None or (tokenizer.unk_token_id is not None and idx == tokenizer.unk_token_id):
        return None
    return int(idx)


def _first_attr(config: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def resolve_modality(
    model_or_config: Any,
    tokenizer: Any = None,
    *,
    audio_token_id: int | None = None,
    audio_start_token_id: int | None = None,
    audio_end_token_id: int | None = None,
) -> ModalitySpec:
    """The :class:`ModalitySpec` of a model, a config, or a spec (returned as is).

    Known families: Qwen2-Audio (``audio_token_index``; its ``<|audio_bos|>``/``<|audio_eos|>`` markers are only
    known from ``tokenizer``), the Qwen2.5-Omni and Qwen3-Omni-MoE thinkers (``audio_token_id``,
    ``audio_start_token_id``, ``audio_end_token_id`` when the config has it, else from ``tokenizer``), and the full
    Omni models/configs (their ``thinker``). Explicit ids override the config. An unknown family works when its
    config declares ``audio_token_id``/``audio_token_index`` or when ``audio_token_id`` is passed; otherwise this
    raises and tells how to build a generic spec.
    """
    if isinstance(model_or_config, ModalitySpec):
        return model_or_config
    model = unwrap_model(model_or_config) if isinstance(model_or_config, nn.Module) else None
    config = model.config if model is not None else model_or_config
    if config is None or not hasattr(config, "model_type"):
        raise TypeError(
            f"resolve_modality expects a model, a config or a ModalitySpec, got {type(model_or_config)}"
        )
    owner_path = ""
    if config.model_type in _FULL_OMNI and getattr(config, "thinker_config", None) is not None:
        config, owner_path = config.thinker_config, "thinker"
    elif model is not None and isinstance(getattr(model, "thinker", None), nn.Module):
        owner_path = "thinker"  # a wrapper that holds the thinker and shows its config
    prefix = f"{owner_path}." if owner_path else ""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = getattr(text_config, "num_hidden_layers", None)
    facts = _FAMILIES.get(config.model_type)

    if facts is None:
        token = (
            audio_token_id
            if audio_token_id is not None
            else _first_attr(config, ("audio_token_id", "audio_token_index"))
        )
        if token is None:
            raise ValueError(
                f"unknown model family {config.model_type!r}: its config declares no audio_token_id. Pass the ids "
                "explicitly: resolve_modality(model, audio_token_id=..., audio_start_token_id=..., "
                "audio_end_token_id=...), or build mapo.modality.ModalitySpec.generic(audio_token_id=..., "
                "start=..., end=...) and pass that spec wherever a spec is expected."
            )
        logger.info(
            "model family %r is not built in; using a generic spec with audio_token_id=%d",
            config.model_type,
            token,
        )
        feature_kwargs = KNOWN_AUDIO_FEATURE_KWARGS if model is None else _forward_feature_kwargs(model)
        return ModalitySpec.generic(
            token,
            audio_start_token_id,
            audio_end_token_id,
            family=config.model_type,
            num_layers=num_layers,
            audio_feature_kwargs=feature_kwargs,
        )

    start_name, end_name = facts["marker_names"]
    token = audio_token_id if audio_token_id is not None else _first_attr(config, facts["id_attrs"])
    start = audio_start_token_id
    if start is None:
        start = _first_attr(config, (facts["start_attr"],)) if facts["start_attr"] else None
        start = start if start is not None else _token_id(tokenizer, start_name)
    end = audio_end_token_id
    if end is None:
        end = _first_attr(config, (facts["end_attr"],)) if facts["end_attr"] else None
        end = end if end is not None else _token_id(tokenizer, end_name)
    return ModalitySpec(
        family=config.model_type,
        audio_token_id=int(token),
        audio_start_token_id=start,
        audio_end_token_id=end,
        language_model_path=f"{prefix}model.language_model",
        num_layers=num_layers,
        attn_config_key="text_config",
        attn_owner_path=owner_path,
        audio_feature_kwargs=facts["feature_kwargs"],
        marker_names=facts["marker_names"],
        max_audio_seconds=facts["max_audio_seconds"],
    )


def with_markers(spec: ModalitySpec, tokenizer: Any) -> ModalitySpec:
    """``spec`` with missing marker ids filled in from ``tokenizer`` (by :attr:`ModalitySpec.marker_names`)."""
    if spec.marker_names is None:
        return spec
    start = spec.audio_start_token_id
    end = spec.audio_end_token_id
    start = start if start is not None else _token_id(tokenizer, spec.marker_names[0])
    end = end if end is not None else _token_id(tokenizer, spec.marker_names[1])
    return replace(spec, audio_start_token_id=start, audio_end_token_id=end)


def _forward_feature_kwargs(model: nn.Module) -> tuple[str, ...]:
    """The known audio feature kwargs that ``model.forward`` accepts."""
    import inspect

    params = inspect.signature(unwrap_model(model).forward).parameters
    return tuple(k for k in KNOWN_AUDIO_FEATURE_KWARGS if k in params)


def with_feature_kwargs(spec: ModalitySpec, model: nn.Module) -> ModalitySpec:
    """``spec`` with :attr:`ModalitySpec.audio_feature_kwargs` filled in from ``model.forward``'s parameters when
    it lists none (a hand-built generic spec); the scoring forwards carry exactly these kwargs."""
    if spec.audio_feature_kwargs:
        return spec
    found = _forward_feature_kwargs(model)
    if not found:
        raise ValueError(
            f"{type(unwrap_model(model)).__name__}.forward takes none of {KNOWN_AUDIO_FEATURE_KWARGS}: give the "
            "names of its audio inputs as ModalitySpec.generic(..., audio_feature_kwargs=(...))"
        )
    return replace(spec, audio_feature_kwargs=found)


def _family_spec(model: nn.Module) -> ModalitySpec | None:
    """The built-in fact sheet of ``model``'s family, or ``None`` for families without one."""
    config = getattr(unwrap_model(model), "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in _FAMILIES or (model_type in _FULL_OMNI and getattr(config, "thinker_config", None)):
        return resolve_modality(model)
    return None


def resolve_decoder(model: nn.Module, spec: ModalitySpec | None = None) -> DecoderHandle:
    """``model``'s language-model decoder where the fact sheet says: ``spec`` if given, else the built-in spec of
    the model's family; models of other families are searched (:func:`locate_decoder`)."""
    spec = spec if spec is not None else _family_spec(model)
    return locate_decoder(model) if spec is None else spec.decoder(model)
