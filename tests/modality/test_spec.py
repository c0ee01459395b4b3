"""Family resolution: the ModalitySpec of each built-in family, generic specs, markers (mapo.modality.spec)."""

from __future__ import annotations

import pytest
from torch import nn
from transformers import Qwen2_5OmniConfig, Qwen2Config, Qwen2ForCausalLM, Qwen3OmniMoeConfig

from mapo.modality import (
    ModalitySpec,
    locate_decoder,
    resolve_modality,
    with_markers,
)
from mapo.testing import (
    tiny_bpe_tokenizer,
    tiny_qwen2_audio,
    tiny_qwen2_audio_processor,
    tiny_qwen3_omni_thinker,
    tiny_qwen25_omni_thinker,
)

# --------------------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------------------


def test_resolve_qwen2_audio_markers_come_from_the_tokenizer():
    tok = tiny_bpe_tokenizer()
    model = tiny_qwen2_audio(num_layers=3)
    spec = resolve_modality(model)
    assert spec.family == "qwen2_audio" and spec.audio_token_id == tok.convert_tokens_to_ids("<|AUDIO|>")
    assert spec.audio_start_token_id is None and spec.audio_end_token_id is None  # not in the config
    assert spec.num_layers == 3 and spec.attn_config_key == "text_config"
    assert spec.audio_feature_kwargs == ("input_features", "feature_attention_mask")
    full = resolve_modality(model.config, tiny_qwen2_audio_processor())  # a processor or a tokenizer
    assert full.audio_start_token_id == tok.convert_tokens_to_ids("<|audio_bos|>")
    assert full.audio_end_token_id == tok.convert_tokens_to_ids("<|audio_eos|>")
    assert with_markers(spec, tok) == full
    assert spec.decoder_layers(model) is model.model.language_model.layers


@pytest.mark.parametrize("factory", [tiny_qwen25_omni_thinker, tiny_qwen3_omni_thinker])
def test_resolve_omni_thinkers_and_full_configs(factory):
    tiny = factory()
    spec = resolve_modality(tiny.model)
    assert spec.family == tiny.family
    assert (spec.audio_token_id, spec.audio_start_token_id, spec.audio_end_token_id) == (
        tiny.audio_token_id,
        tiny.audio_start_token_id,
        tiny.audio_end_token_id,
    )
    assert spec.language_model(tiny.model) is tiny.model.model.language_model
    full_cls = Qwen2_5OmniConfig if tiny.family == "qwen2_5_omni_thinker" else Qwen3OmniMoeConfig
    full_config = full_cls(thinker_config=tiny.model.config.to_dict())
    full = resolve_modality(full_config)
    assert full.audio_token_id == tiny.audio_token_id and full.family == tiny.family
    assert full.attn_owner_path == "thinker" and full.language_model_path == "thinker.model.language_model"

    class FullOmni(nn.Module):  # layout of Qwen*OmniForConditionalGeneration without the talker weights
        def __init__(self):
            super().__init__()
            self.thinker, self.config = tiny.model, full_config

    wrapper = FullOmni()
    assert resolve_modality(wrapper) == full
    assert full.language_model(wrapper) is tiny.model.model.language_model
    handle = locate_decoder(wrapper)
    assert handle.owner is tiny.model and handle.config_key == "text_config"


def test_qwen3_omni_end_marker_from_tokenizer_when_config_lacks_it():
    tiny = tiny_qwen3_omni_thinker()
    del tiny.model.config.audio_end_token_id  # the 5.23 config class does not declare it
    assert resolve_modality(tiny.model).audio_end_token_id is None
    assert resolve_modality(tiny.model, tiny.tokenizer).audio_end_token_id == tiny.audio_end_token_id


def test_generic_and_unknown_families():
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    with pytest.raises(ValueError, match=r"unknown model family 'qwen2'.*ModalitySpec.generic"):
        resolve_modality(config)
    spec = resolve_modality(config, audio_token_id=7, audio_start_token_id=5)
    assert (spec.family, spec.audio_token_id, spec.audio_start_token_id, spec.num_layers) == (
        "qwen2",
        7,
        5,
        2,
    )
    generic = ModalitySpec.generic(audio_token_id=9, start=8, end=10)
    assert resolve_modality(generic) is generic and generic.marker_ids == (8, 10)
    model = Qwen2ForCausalLM(config)
    handle = locate_decoder(model)
    assert handle.language_model is model.model and handle.config_key == "" and handle.num_layers == 2
    assert generic.decoder_layers(model) is model.model.layers
    with pytest.raises(TypeError, match="audio_token_id must be an int"):
        ModalitySpec.generic(audio_token_id="<|AUDIO|>")
