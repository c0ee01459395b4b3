"""Per-model-family facts about the audio modality, and everything derived from them below the trainer.

Modules, one job each (import the names from ``mapo.modality``):

* ``spec``: :class:`ModalitySpec`, the fact sheet of one model family (token ids, decoder location, audio feature
  kwargs, processor limits), and :func:`resolve_modality`;
* ``layout``: the tensors MAPO derives from a spec: the audio key set S_audio (:func:`audio_key_mask`), the
  text-only prompt x_text (:func:`text_only_prompt`), prompt + completion layouts;
* ``decoder``: where a model's language-model decoder lives and how to switch only its attention implementation;
* ``token_stats``: per-token log-probabilities and entropies of a completion (Δh's inputs), in fp32 chunks;
* ``loading``: :func:`load_policy_model`, the class MAPO trains for a checkpoint (the thinker of an Omni model).

Layer: transformers and torch only; never TRL, so ``mapo eval`` and ``mapo diagnose`` load models without it.
"""

from .decoder import DecoderHandle, decoder_at, locate_decoder, unwrap_model
from .layout import (
    TEXT_ONLY_MODES,
    Concatenated,
    audio_key_mask,
    completion_query_mask,
    concat_prompt_completion,
    text_only_prompt,
)
from .loading import load_policy_model
from .spec import (
    KNOWN_AUDIO_FEATURE_KWARGS,
    ModalitySpec,
    resolve_decoder,
    resolve_modality,
    with_feature_kwargs,
    with_markers,
)
from .token_stats import completion_logps_and_entropies, logps_and_entropies_from_hidden

__all__ = [
    "KNOWN_AUDIO_FEATURE_KWARGS",
    "TEXT_ONLY_MODES",
    "Concatenated",
    "DecoderHandle",
    "ModalitySpec",
    "audio_key_mask",
    "completion_logps_and_entropies",
    "completion_query_mask",
    "concat_prompt_completion",
    "decoder_at",
    "load_policy_model",
    "locate_decoder",
    "logps_and_entropies_from_hidden",
    "resolve_decoder",
    "resolve_modality",
    "text_only_prompt",
    "unwrap_model",
    "with_feature_kwargs",
    "with_markers",
]
