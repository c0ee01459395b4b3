"""Tiny Qwen2.5-Omni and Qwen3-Omni-MoE thinkers, and their audio inputs built without the Omni processors.

The Omni processors need torchvision (a video processor) which does not load beside the CPU torch build, so
:func:`omni_audio_inputs` builds the model inputs directly with the real feature extractor and the family's own
placeholder-expansion formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .tokenizer import _special_id, tiny_bpe_tokenizer


@dataclass
class TinyOmni:
    """A tiny Omni thinker with the token ids it was configured with."""

    model: torch.nn.Module
    tokenizer: object
    audio_token_id: int
    audio_start_token_id: int
    audio_end_token_id: int
    family: str


def _omni_token_ids(tokenizer) -> dict[str, int]:
    return {
        "audio_token_id": _special_id(tokenizer, "<|audio_pad|>"),
        "audio_start_token_id": _special_id(tokenizer, "<|audio_start|>"),
        "audio_end_token_id": _special_id(tokenizer, "<|audio_end|>"),
        "image_token_id": _special_id(tokenizer, "<|image_pad|>"),
        "video_token_id": _special_id(tokenizer, "<|video_pad|>"),
        "vision_start_token_id": _special_id(tokenizer, "<|vision_start|>"),
        "vision_end_token_id": _special_id(tokenizer, "<|vision_end|>"),
    }


def _mrope_section(head_dim: int) -> list[int]:
    """The (temporal, height, width) rotary split of an Omni thinker; it must sum to head_dim / 2 ([2, 3, 3] at 16)."""
    return [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]


def _build_thinker(
    model_cls, config, tokenizer, ids: dict[str, int], family: str, seed: int, attn_implementation
):
    """Random weights (seeded) for ``config`` with the tokenizer's pad/eos in config and generation config."""
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = model_cls._from_config(config, attn_implementation=attn_implementation)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return TinyOmni(
        model.eval(),
        tokenizer,
        ids["audio_token_id"],
        ids["audio_start_token_id"],
        ids["audio_end_token_id"],
        family,
    )


def tiny_qwen25_omni_thinker(
    vocab_size: int = 448,
    num_layers: int = 2,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    num_heads: int = 4,
    num_kv_heads: int = 2,
) -> TinyOmni:
    """A ``Qwen2_5OmniThinkerForConditionalGeneration`` with random weights (hidden 64; default head_dim 16, GQA
    4/2; ``num_heads=2, num_kv_heads=1`` gives the head_dim 32 vLLM's CPU attention needs)."""
    from transformers.models.qwen2_5_omni import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )

    tokenizer = tiny_bpe_tokenizer()
    ids = _omni_token_ids(tokenizer)
    config = Qwen2_5OmniThinkerConfig(
        audio_config={
            "d_model": 32,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
            "max_source_positions": 100,
            "n_window": 50,
            "output_dim": 64,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [0],
        },
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": _mrope_section(64 // num_heads),
            },
        },
        audio_token_index=ids["audio_token_id"],
        image_token_index=ids["image_token_id"],
        video_token_index=ids["video_token_id"],
        audio_start_token_id=ids["audio_start_token_id"],
        audio_end_token_id=ids["audio_end_token_id"],
    )
    config.vision_start_token_id = ids["vision_start_token_id"]
    config.vision_end_token_id = ids["vision_end_token_id"]
    return _build_thinker(
        Qwen2_5OmniThinkerForConditionalGeneration,
        config,
        tokenizer,
        ids,
        "qwen2_5_omni_thinker",
        seed,
        attn_implementation,
    )


def tiny_qwen3_omni_thinker(
    vocab_size: int = 448,
    num_layers: int = 2,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    num_heads: int = 4,
    num_kv_heads: int = 2,
) -> TinyOmni:
    """A ``Qwen3OmniMoeThinkerForConditionalGeneration`` with random weights (MoE text model, 4 experts; heads as in
    :func:`tiny_qwen25_omni_thinker`)."""
    from transformers.models.qwen3_omni_moe import (
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
    )

    tokenizer = tiny_bpe_tokenizer()
    ids = _omni_token_ids(tokenizer)
    config = Qwen3OmniMoeThinkerConfig(
        audio_config={
            "d_model": 32,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
            "max_source_positions": 100,
            "n_window": 50,
            "output_dim": 64,
            "downsample_hidden_size": 16,
            "n_window_infer": 100,
            "conv_chunksize": 50,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "deepstack_visual_indexes": [0],
            "num_position_embeddings": 64,
            # read by vLLM's Qwen3-Omni vision tower: 8 x 8 patches of 16 (= num_position_embeddings), an embedding table
            "image_size": 128,
            "apply_vit_abs_pos_embed": True,
        },
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "moe_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": _mrope_section(64 // num_heads),
                "mrope_interleaved": True,
            },
        },
        audio_token_id=ids["audio_token_id"],
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        audio_start_token_id=ids["audio_start_token_id"],
    )
    config.vision_start_token_id = ids["vision_start_token_id"]
    config.vision_end_token_id = ids["vision_end_token_id"]
    config.audio_end_token_id = ids["audio_end_token_id"]
    return _build_thinker(
        Qwen3OmniMoeThinkerForConditionalGeneration,
        config,
        tokenizer,
        ids,
        "qwen3_omni_moe_thinker",
        seed,
        attn_implementation,
    )


def _omni_audio_token_count(family: str, n_frames: int) -> int:
    """Placeholder count for ``n_frames`` mel frames, from the family's own (processor/modeling) formula."""
    if family == "qwen2_5_omni_thinker":
        from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths
    else:
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
            _get_feat_extract_output_lengths,
        )
    return int(_get_feat_extract_output_lengths(torch.tensor([n_frames])).item())


def omni_audio_inputs(
    tiny: TinyOmni,
    texts_before: list[str],
    texts_after: list[str],
    clips: list[np.ndarray],
    sampling_rate: int = 16000,
) -> dict[str, torch.Tensor]:
    """Left-padded Omni thinker inputs ``text_before <|audio_start|> <|audio_pad|>*n <|audio_end|> text_after``.

    Features come from the real ``WhisperFeatureExtractor``; ``n`` follows the family's own output-length
    formula, so the model's feature/placeholder check passes. Clips of different lengths give different ``n``.
    """
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=sampling_rate, hop_length=160, chunk_length=2
    )
    feats = fe(
        clips, sampling_rate=sampling_rate, return_attention_mask=True, padding="longest", return_tensors="pt"
    )
    frames = feats["attention_mask"].sum(-1).tolist()
    tok = tiny.tokenizer
    rows = []
    for before, after, n_frames in zip(texts_before, texts_after, frames, strict=True):
        n_tok = _omni_audio_token_count(tiny.family, int(n_frames))
        ids = (
            tok(before, add_special_tokens=False)["input_ids"]
            + [tiny.audio_start_token_id]
            + [tiny.audio_token_id] * n_tok
            + [tiny.audio_end_token_id]
            + tok(after, add_special_tokens=False)["input_ids"]
        )
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "input_features": feats["input_features"],
        "feature_attention_mask": feats["attention_mask"],
    }
