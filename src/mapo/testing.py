"""Tiny random-weight models and offline processors built from real architecture configs.

Nothing here downloads anything: tokenizers are trained in memory with ``tokenizers`` and the models are
random-initialised from the real ``transformers`` classes, so tests, benchmarks and examples exercise the same
code paths as a 7B checkpoint at a size that runs in milliseconds on a CPU.

Three families are covered: Qwen2-Audio (with a real ``Qwen2AudioProcessor``), the Qwen2.5-Omni thinker and
the Qwen3-Omni-MoE thinker. The Omni processors need torchvision (a video processor) which does not load beside
the CPU torch build, so for those families :func:`omni_audio_inputs` builds the model inputs directly with the
real feature extractor and the real placeholder-expansion formula.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from mapo.synthetic.bpe import train_byte_level_bpe

__all__ = [
    "TINY_SPECIAL_TOKENS",
    "TINY_TEMPLATE_TOKENS",
    "REAL_SHAPES",
    "TinyOmni",
    "omni_audio_inputs",
    "real_shape_config",
    "real_shape_model",
    "sine_clip",
    "tiny_bpe_tokenizer",
    "tiny_omni_processor",
    "tiny_perceptron_tagger",
    "tiny_qwen2_audio",
    "tiny_qwen2_audio_processor",
    "tiny_qwen25_omni_thinker",
    "tiny_qwen3_omni_processor",
    "tiny_qwen3_omni_thinker",
    "tiny_qwen2_audio_for_vllm",
    "save_tiny_omni_for_vllm",
    "tiny_real_omni_processor",
    "train_byte_level_bpe",
]

#: Special tokens shared by the tiny tokenizers (Qwen naming). Their ids are the first ids after the BPE vocab.
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Template tags added as ordinary (non-special) tokens, as in Qwen3's tokenizer: decoding with
#: ``skip_special_tokens=True`` (what TRL does) keeps them, so the format and accuracy rewards can see them.
TINY_TEMPLATE_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

_CORPUS = [
    "The audio features a dog barking twice, then a car horn in the distance.",
    "First, the melody starts low and rises; next, it falls back to the first note.",
    "A woman speaks calmly while rain falls on a metal roof. The answer is B.",
    "Option A: a violin. Option B: a piano. Option C: a flute. Option D: drums.",
    "Let me think step by step about the pitch, the rhythm and the speaker's emotion.",
    "There are 3 beeps, each about 0.5 seconds long, followed by silence.\nSo the count is three.",
    "<think>The sound is loud and metallic.</think><answer>Factory machinery</answer>",
    "Horse-drawn wagon, train, airplane, wind turbine, car engine, rooster crowing.",
    "Is the second note higher than the first? Yes, it is higher; the interval is a fifth.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024. Punctuation: , . ; : ! ? ( ) [ ] ' \" - --",
]


@lru_cache(maxsize=4)
def _trained_bpe(vocab_size: int) -> str:
    """The tiny tokenizer's JSON (cached: training takes ~50 ms)."""
    return train_byte_level_bpe(_CORPUS * 4, vocab_size, TINY_SPECIAL_TOKENS)


#: A few Penn-tagged sentences: enough for an averaged perceptron to tag the test sentences (no NLTK download).
_PENN_TAGGED = (
    "The/DT dog/NN barks/VBZ loudly/RB ./.",
    "A/DT piano/NN plays/VBZ in/IN the/DT room/NN ./.",
    "It/PRP could/MD be/VB a/DT rooster/NN ./.",
    "There/EX are/VBP 3/CD beeps/NNS and/CC silence/NN ./.",
    "The/DT melody/NN rises/VBZ slowly/RB and/CC falls/VBZ ./.",
    "She/PRP speaks/VBZ calmly/RB in/IN the/DT rain/NN ./.",
    "The/DT loud/JJ engine/NN hums/VBZ ./.",
    "It/PRP barks/VBZ at/IN the/DT loud/JJ car/NN ./.",
    "Why/WRB could/MD it/PRP be/VB a/DT piano/NN ?/.",
)


def tiny_perceptron_tagger():
    """NLTK's averaged perceptron (the paper's tagger) trained offline on :data:`_PENN_TAGGED`; needs ``nltk``.

    Training shuffles with the global ``random`` module, so it is seeded and the caller's random state restored.
    """
    import random

    from nltk.tag.perceptron import PerceptronTagger

    state = random.getstate()
    random.seed(0)
    try:
        model = PerceptronTagger(load=False)
        sentences = [[tuple(tok.rsplit("/", 1)) for tok in s.split()] for s in _PENN_TAGGED]
        model.train(
            sentences * 25, nr_iter=5
        )  # x25: every word reaches the tag-dictionary frequency threshold
    finally:
        random.setstate(state)
    return model


def tiny_bpe_tokenizer(vocab_size: int = 400, named_tokens: dict[str, str] | None = None):
    """A Qwen-style byte-level BPE tokenizer (``Ġ`` space and ``Ċ`` newline markers) trained offline.

    All :data:`TINY_SPECIAL_TOKENS` are special tokens; ``audio_token`` etc. are exposed as named extra special
    tokens because the Qwen processors read ``tokenizer.audio_token``. ``named_tokens`` (e.g.
    ``{"audio_token": "<|audio_pad|>"}``) become attributes ``tokenizer.audio_token`` / ``audio_token_id``.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_bpe(vocab_size))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(TINY_SPECIAL_TOKENS[1:]),
        **({"model_specific_special_tokens": named_tokens} if named_tokens else {}),
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TINY_TEMPLATE_TOKENS])
    tok.padding_side = "left"
    return tok


def _special_id(tokenizer, token: str) -> int:
    idx = tokenizer.convert_tokens_to_ids(token)
    if idx is None or idx == tokenizer.unk_token_id:
        raise KeyError(f"{token!r} is not in the tiny tokenizer")
    return int(idx)


# --------------------------------------------------------------------------------------------------------------
# Qwen2-Audio
# --------------------------------------------------------------------------------------------------------------


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


def sine_clip(freq_hz: float = 440.0, seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A float32 tone with a little noise: a real waveform for the real feature extractors."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq_hz * t) + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Qwen2.5-Omni and Qwen3-Omni-MoE thinkers
# --------------------------------------------------------------------------------------------------------------


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
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return TinyOmni(
        model.eval(),
        tokenizer,
        ids["audio_token_id"],
        ids["audio_start_token_id"],
        ids["audio_end_token_id"],
        "qwen2_5_omni_thinker",
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
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = Qwen3OmniMoeThinkerForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return TinyOmni(
        model.eval(),
        tokenizer,
        ids["audio_token_id"],
        ids["audio_start_token_id"],
        ids["audio_end_token_id"],
        "qwen3_omni_moe_thinker",
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


_OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_omni_processor(chunk_seconds: int = 1):
    """An audio-only processor for the tiny Qwen2.5-Omni thinker, usable by TRL (a ``ProcessorMixin``).

    The real ``Qwen2_5OmniProcessor`` needs a video processor (torchvision), which does not load beside the CPU
    torch build. For audio-only prompts it expands one ``<|audio_pad|>`` between the start/end markers into
    ``((L-1)//2+1-2)//2+1`` placeholders for L mel frames — the same formula as Qwen2-Audio's processor — so a
    ``Qwen2AudioProcessor`` configured with the Omni tokens and an Omni-style chat template produces the same ids
    and features (Whisper features, 128 mel bins; ``chunk_seconds`` = 1 → 100 frames → 25 placeholders).
    """
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=chunk_seconds
    )
    return Qwen2AudioProcessor(
        feature_extractor=fe,
        tokenizer=tiny_bpe_tokenizer(),
        chat_template=_OMNI_CHAT_TEMPLATE,
        audio_token="<|audio_pad|>",
        audio_bos_token="<|audio_start|>",
        audio_eos_token="<|audio_end|>",
    )


# --------------------------------------------------------------------------------------------------------------
# Shapes vLLM's CPU engine needs
# --------------------------------------------------------------------------------------------------------------


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


def tiny_real_omni_processor(family: str, chunk_seconds: int = 1):
    """The family's real Omni processor (``Qwen2_5OmniProcessor`` / ``Qwen3OmniMoeProcessor``) on the tiny tokenizer.

    It needs an importable ``torchvision`` (its video processor), which the CPU torch build cannot load: the vLLM
    tests put a test-only stand-in on the path. The Omni chat template renders one audio part as
    ``<|audio_start|><|audio_pad|><|audio_end|>``.
    """
    from transformers import Qwen2VLImageProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    if family == "qwen2_5_omni_thinker":
        from transformers import Qwen2_5OmniProcessor as cls
    else:
        from transformers import Qwen3OmniMoeProcessor as cls
    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=chunk_seconds
    )
    return cls(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=fe,
        tokenizer=tiny_bpe_tokenizer(named_tokens=_OMNI_NAMED_TOKENS),
        chat_template=_OMNI_CHAT_TEMPLATE,
    )


#: The token names the Omni processors read from their tokenizer, on the ids the tiny Omni thinkers are built with.
_OMNI_NAMED_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "audio_token": "<|audio_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}


def save_tiny_omni_for_vllm(directory: str, family: str = "qwen2_5_omni_thinker", seed: int = 0) -> str:
    """Save a tiny Omni thinker as a full Omni checkpoint vLLM loads (``thinker.`` weights, ``thinker_config``,
    the real Omni processor; head_dim 32). Load the trainable thinker back with
    :func:`mapo.modality.load_policy_model`. Needs an importable ``torchvision`` (see
    :func:`tiny_real_omni_processor`)."""
    from .trainer.rollout.checkpoint import save_vllm_checkpoint

    factory = tiny_qwen25_omni_thinker if family == "qwen2_5_omni_thinker" else tiny_qwen3_omni_thinker
    tiny = factory(seed=seed, num_heads=2, num_kv_heads=1)
    return save_vllm_checkpoint(tiny.model, tiny_real_omni_processor(family), directory)


def tiny_qwen3_omni_processor(chunk_seconds: int = 1):
    """:func:`tiny_omni_processor` for the tiny Qwen3-Omni-MoE thinker: the same tokens and template, but one
    ``<|audio_pad|>`` per frame of Qwen3-Omni's audio encoder (its own ``_get_feat_extract_output_lengths``, which
    downsamples 100 mel frames to 13), so the model's feature/placeholder check passes."""
    from transformers import Qwen2AudioProcessor

    class Qwen3OmniAudioOnlyProcessor(Qwen2AudioProcessor):
        def _process_audio(self, audio, **kwargs):
            inputs, _ = super()._process_audio(audio, **kwargs)
            frames = inputs["feature_attention_mask"].sum(-1).tolist()
            inputs["num_audio_tokens"] = [
                _omni_audio_token_count("qwen3_omni_moe_thinker", int(n)) for n in frames
            ]
            return inputs, [self.replace_audio_token(inputs, audio_idx=i) for i in range(len(frames))]

    base = tiny_omni_processor(chunk_seconds)
    return Qwen3OmniAudioOnlyProcessor(
        feature_extractor=base.feature_extractor,
        tokenizer=base.tokenizer,
        chat_template=_OMNI_CHAT_TEMPLATE,
        audio_token="<|audio_pad|>",
        audio_bos_token="<|audio_start|>",
        audio_eos_token="<|audio_end|>",
    )


# --------------------------------------------------------------------------------------------------------------
# Real architecture shapes (random weights of real size: benchmarks/gpu_check.py, meta-device checks)
# --------------------------------------------------------------------------------------------------------------
# The checkpoints' config.json values that set tensor shapes (widths, depths, heads, experts, vocabulary), so the
# real architectures can be built without downloading anything. `real_shape_model(..., num_layers=2)` keeps only
# two decoder layers (a 2-layer slice of Qwen3-Omni-30B-A3B fits any GPU); on device="meta" nothing is allocated.


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
    ids and the pad / eos ids are the tokenizer's, so the model runs with :mod:this module's processors.
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
