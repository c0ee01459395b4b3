"""Tiny models with the shapes vLLM's CPU engine needs (head_dim 32, Qwen2-Audio's fixed 30 s input window)."""

from __future__ import annotations

from .omni import tiny_qwen3_omni_thinker, tiny_qwen25_omni_thinker
from .omni_processors import tiny_real_omni_processor
from .qwen2_audio import tiny_qwen2_audio, tiny_qwen2_audio_processor


def tiny_qwen2_audio_for_vllm(seed: int = 0):
    """``(model, processor)``: a tiny Qwen2-Audio with the shapes vLLM's CPU engine accepts.

    vLLM's CPU attention supports head sizes 32..512 (head_dim 32 here: hidden 64, 2 heads, 1 KV head), and its
    Qwen2-Audio input schema fixes 3000 mel frames, i.e. a 30 s Whisper window (``chunk_seconds=30``) and 1500 audio
    encoder positions. A 1 s clip still expands to 25 placeholders (the feature mask counts).
    """
    processor = tiny_qwen2_audio_processor(chunk_seconds=30)
    model = tiny_qwen2_audio(
        tokenizer=processor.tokenizer,
        hidden_size=64,
        num_heads=2,
        num_kv_heads=1,
        max_source_positions=1500,
        seed=seed,
    )
    return model, processor


def save_tiny_omni_for_vllm(directory: str, family: str = "qwen2_5_omni_thinker", seed: int = 0) -> str:
    """Save a tiny Omni thinker as a full Omni checkpoint vLLM loads (``thinker.`` weights, ``thinker_config``,
    the real Omni processor; head_dim 32). Load the trainable thinker back with
    :func:`mapo.modality.load_policy_model`. Needs an importable ``torchvision`` (see
    :func:`tiny_real_omni_processor`)."""
    from mapo.trainer.rollout.checkpoint import save_vllm_checkpoint

    factory = tiny_qwen25_omni_thinker if family == "qwen2_5_omni_thinker" else tiny_qwen3_omni_thinker
    tiny = factory(seed=seed, num_heads=2, num_kv_heads=1)
    return save_vllm_checkpoint(tiny.model, tiny_real_omni_processor(family), directory)
