"""Real architecture shapes: random weights of real size (benchmarks/gpu_check.py, meta-device checks).

The checkpoints' config.json values that set tensor shapes (widths, depths, heads, experts, vocabulary), so the
real architectures can be built without downloading anything. `real_shape_model(..., num_layers=2)` keeps only
two decoder layers (a 2-layer slice of Qwen3-Omni-30B-A3B fits any GPU); on device="meta" nothing is allocated.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .omni import _omni_token_ids
from .tokenizer import _special_id


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


_QWEN3_OMNI_TEXT = {
    "vocab_size": 152064,
    "hidden_size": 2048,
    "intermediate_size": 768,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "max_position_embeddings": 65536,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1e6,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
}


#: family → (model class path, config class path, config kwargs, released token ids).
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2_audio_7b": {
        "model": "transformers.Qwen2AudioForConditionalGeneration",
        "config": "transformers.Qwen2AudioConfig",
        "kwargs": {
            "audio_config": {
                "model_type": "qwen2_audio_encoder",
                "d_model": 1280,
                "encoder_layers": 32,
                "encoder_attention_heads": 20,
                "encoder_ffn_dim": 5120,
                "num_mel_bins": 128,
                "max_source_positions": 1500,
            },
            "text_config": {
                "model_type": "qwen2",
                "vocab_size": 156032,
                "hidden_size": 4096,
                "intermediate_size": 11008,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "max_position_embeddings": 8192,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            },
        },
        "ids": {"audio_token_index": 151646},
        "text_key": "text_config",
    },
    "qwen2_5_omni_7b_thinker": {
        "model": "transformers.models.qwen2_5_omni.Qwen2_5OmniThinkerForConditionalGeneration",
        "config": "transformers.models.qwen2_5_omni.Qwen2_5OmniThinkerConfig",
        "kwargs": {
            "audio_config": {
                "d_model": 1280,
                "encoder_layers": 32,
                "encoder_attention_heads": 20,
                "encoder_ffn_dim": 5120,
                "num_mel_bins": 128,
                "max_source_positions": 1500,
                "n_window": 100,
                "output_dim": 3584,
            },
            "vision_config": {
                "depth": 32,
                "hidden_size": 1280,
                "intermediate_size": 3420,
                "num_heads": 16,
                "out_hidden_size": 3584,
                "fullatt_block_indexes": [7, 15, 23, 31],
            },
            "text_config": {
                "vocab_size": 152064,
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            },
        },
        "ids": {
            "audio_token_index": 151646,
            "image_token_index": 151655,
            "video_token_index": 151656,
            "audio_start_token_id": 151647,
            "audio_end_token_id": 151648,
        },
        "text_key": "text_config",
    },
    "qwen3_omni_30b_a3b_thinker": {
        "model": "transformers.models.qwen3_omni_moe.Qwen3OmniMoeThinkerForConditionalGeneration",
        "config": "transformers.models.qwen3_omni_moe.Qwen3OmniMoeThinkerConfig",
        "kwargs": {
            "audio_config": {
                "d_model": 1280,
                "encoder_layers": 32,
                "encoder_attention_heads": 20,
                "encoder_ffn_dim": 5120,
                "num_mel_bins": 128,
                "max_source_positions": 1500,
                "n_window": 50,
                "n_window_infer": 800,
                "conv_chunksize": 500,
                "downsample_hidden_size": 480,
                "output_dim": 2048,
            },
            "vision_config": {
                "depth": 27,
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_heads": 16,
                "out_hidden_size": 2048,
                "deepstack_visual_indexes": [8, 16, 24],
                "num_position_embeddings": 2304,
                # read by vLLM's Qwen3-Omni vision tower (the checkpoint's values: 48 x 48 patches of 16)
                "image_size": 768,
                "apply_vit_abs_pos_embed": True,
            },
            "text_config": _QWEN3_OMNI_TEXT,
        },
        "ids": {
            "audio_token_id": 151675,
            "image_token_id": 151655,
            "video_token_id": 151656,
            "audio_start_token_id": 151669,
        },
        "text_key": "text_config",
    },
}


def _tokenizer_ids(family: str, tokenizer) -> dict[str, int]:
    if family == "qwen2_audio_7b":
        return {"audio_token_index": _special_id(tokenizer, "<|AUDIO|>")}
    ids = _omni_token_ids(tokenizer)
    if family == "qwen2_5_omni_7b_thinker":
        return {
            "audio_token_index": ids["audio_token_id"],
            "image_token_index": ids["image_token_id"],
            "video_token_index": ids["video_token_id"],
            "audio_start_token_id": ids["audio_start_token_id"],
            "audio_end_token_id": ids["audio_end_token_id"],
        }
    return {
        "audio_token_id": ids["audio_token_id"],
        "image_token_id": ids["image_token_id"],
        "video_token_id": ids["video_token_id"],
        "audio_start_token_id": ids["audio_start_token_id"],
    }


def real_shape_config(family: str, *, num_layers: int | None = None, tokenizer=None, **text_overrides: Any):
    """The config of ``family`` (a key of :data:`REAL_SHAPES`) at real shape; ``num_layers`` keeps only that many
    decoder layers, ``text_overrides`` replace text-config fields (e.g. ``vocab_size``)."""
    if family not in REAL_SHAPES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(REAL_SHAPES)}")
    spec = REAL_SHAPES[family]
    kwargs = copy.deepcopy(spec["kwargs"])
    text = kwargs[spec["text_key"]]
    if num_layers is not None:
        text["num_hidden_layers"] = num_layers
    text.update(text_overrides)
    ids = dict(spec["ids"]) if tokenizer is None else _tokenizer_ids(family, tokenizer)
    config = _import(spec["config"])(**kwargs, **ids)
    if tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
        if family != "qwen2_audio_7b":
            extra = _omni_token_ids(tokenizer)
            config.vision_start_token_id = extra["vision_start_token_id"]
            config.vision_end_token_id = extra["vision_end_token_id"]
            config.audio_end_token_id = extra["audio_end_token_id"]
    return config


def real_shape_model(
    family: str,
    *,
    num_layers: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    tokenizer=None,
    attn_implementation: str = "sdpa",
    seed: int = 0,
    **text_overrides: Any,
) -> torch.nn.Module:
    """A random-weight model of ``family`` at real shape, built directly on ``device`` in ``dtype``.

    On ``device="meta"`` nothing is allocated (module names and shapes only). With ``tokenizer`` the special token
    ids and the pad / eos ids are the tokenizer's, so the model runs with :mod:`mapo.testing`'s processors.
    """
    config = real_shape_config(family, num_layers=num_layers, tokenizer=tokenizer, **text_overrides)
    cls = _import(REAL_SHAPES[family]["model"])
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    if tokenizer is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
