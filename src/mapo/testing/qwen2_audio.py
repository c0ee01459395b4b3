"""Tiny Qwen2-Audio: a random-weight ``Qwen2AudioForConditionalGeneration`` and a real ``Qwen2AudioProcessor``
around the tiny tokenizer.
"""

from __future__ import annotations

import torch

from .tokenizer import _special_id, tiny_bpe_tokenizer


def tiny_qwen2_audio_processor(vocab_size: int = 400, chunk_seconds: int = 1):
    """A real ``Qwen2AudioProcessor`` (Whisper features, 128 mel bins) around the tiny BPE tokenizer.

    ``chunk_seconds`` = 1 gives 100 mel frames per clip, which matches :func:`tiny_qwen2_audio`'s encoder
    (``max_source_positions`` 50) and expands one ``<|AUDIO|>`` into 25 placeholders.
    """
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=chunk_seconds
    )
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tiny_bpe_tokenizer(vocab_size))


def tiny_qwen2_audio(
    vocab_size: int = 448,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_source_positions: int = 50,
    tokenizer=None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
):
    """A ``Qwen2AudioForConditionalGeneration`` with random weights (fp32, eval mode).

    The audio placeholder id is taken from ``tokenizer`` (default: the tiny BPE tokenizer), so the model and
    :func:`tiny_qwen2_audio_processor` agree. ``vocab_size`` must exceed the tokenizer's size.
    """
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    tokenizer = tokenizer or tiny_bpe_tokenizer()
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": 32,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
            "max_source_positions": max_source_positions,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "max_position_embeddings": 2048,
            "eos_token_id": _special_id(tokenizer, "<|im_end|>"),
            "pad_token_id": _special_id(tokenizer, "<|endoftext|>"),
        },
        audio_token_index=_special_id(tokenizer, "<|AUDIO|>"),
    )
    config.pad_token_id = _special_id(tokenizer, "<|endoftext|>")
    config.eos_token_id = _special_id(tokenizer, "<|im_end|>")
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    return model.eval()
