"""Tiny offline tokenizer, processor and Qwen2-Audio model for the tone-melody task.

* Tokenizer: a Qwen-style byte-level BPE (``Ġ`` space markers) trained in memory with ``tokenizers`` on the
  task's own text (:func:`mapo.synthetic.task.task_corpus`), so every task word is one token (``Ġfirst``, ``ĠC``)
  and the POS gate's word alignment is trivial. Special tokens follow Qwen's naming.
* Processor: a real ``Qwen2AudioProcessor`` whose ``WhisperFeatureExtractor`` chunk length equals the clip length
  (1 s → 100 mel frames → 25 audio placeholders) and whose chat template has no system prompt (the default one
  adds "You are a helpful assistant." — 8 tokens the tiny model does not need).
* Model: ``Qwen2AudioForConditionalGeneration`` from a config (random init): Whisper-style audio encoder
  (``max_source_positions`` = frames / 2), linear projector, Qwen2 decoder. Sizes are in :class:`ModelSize`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from .task import TaskConfig, task_corpus

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "ModelSize",
    "audio_token_count",
    "build_processor",
    "build_tiny_audio_lm",
    "build_tokenizer",
]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
)

#: Template tags: single tokens, but not special (decoding with skip_special_tokens keeps them).
TEMPLATE_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

#: Qwen's turn format without a system prompt; one ``<|audio_bos|><|AUDIO|><|audio_eos|>`` per audio part (the
#: processor expands ``<|AUDIO|>``). Parts are matched on ``type`` only, so Arrow's ``None`` keys cannot add
#: placeholders.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' -%}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class ModelSize:
    """Model dimensions (defaults: ~0.2 M parameters, a 64-sequence batch trains at ~10 steps/s on 2 cores)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    audio_d_model: int = 64
    audio_layers: int = 1
    audio_heads: int = 4
    audio_ffn: int = 128


@lru_cache(maxsize=8)
def _bpe_json(config: TaskConfig, vocab_size: int) -> str:
    from .bpe import train_byte_level_bpe

    trained = train_byte_level_bpe(task_corpus(config), vocab_size, SPECIAL_TOKENS)
    # The template tags keep their ids but become ordinary added tokens, as in Qwen3's tokenizer: TRL decodes
    # completions with skip_special_tokens=True, and the rewards must still see <think>/<answer>.
    spec = json.loads(trained)
    for added in spec["added_tokens"]:
        if added["content"] in TEMPLATE_TOKENS:
            added["special"] = False
    return json.dumps(spec)


def build_tokenizer(config: TaskConfig | None = None, vocab_size: int = 400):
    """The task's byte-level BPE as a ``PreTrainedTokenizerFast`` (left padding, eos ``<|im_end|>``).

    ``vocab_size`` counts the 256 byte symbols and the specials; the rest are merges, enough for every task word
    to become one token (checked in ``tests/test_synthetic.py``).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    config = config or TaskConfig()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bpe_json(config, vocab_size)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS[1:] if t not in TEMPLATE_TOKENS],
    )
    tok.padding_side = "left"
    return tok


def build_processor(config: TaskConfig | None = None):
    """A real ``Qwen2AudioProcessor`` for the task: Whisper features (128 bins) over one clip, short template."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    config = config or TaskConfig()
    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=config.sampling_rate, hop_length=160, chunk_length=config.clip_seconds
    )
    return Qwen2AudioProcessor(
        feature_extractor=fe, tokenizer=build_tokenizer(config), chat_template=CHAT_TEMPLATE
    )


def audio_token_count(n_frames: int) -> int:
    """Audio placeholders for ``n_frames`` mel frames (Qwen2-Audio: conv stride 2, then 2× average pooling)."""
    return ((n_frames - 1) // 2 + 1 - 2) // 2 + 1


def build_tiny_audio_lm(
    seed: int = 0,
    size: ModelSize | None = None,
    processor=None,
    config: TaskConfig | None = None,
    attn_implementation: str = "sdpa",
):
    """``(model, processor)``: a random-init ``Qwen2AudioForConditionalGeneration`` and its processor.

    The encoder's ``max_source_positions`` is half the feature extractor's frame count (the model enforces mel
    length = 2·max_source_positions). fp32, eval mode, ``generation_config`` stops at ``<|im_end|>``.
    """
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    size = size or ModelSize()
    processor = processor or build_processor(config)
    tok = processor.tokenizer
    frames = processor.feature_extractor.nb_max_frames
    if frames % 2:
        raise ValueError(f"the feature extractor gives {frames} frames; Qwen2-Audio needs an even number")
    pad_id, eos_id = tok.pad_token_id, tok.eos_token_id
    model_config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": size.audio_d_model,
            "encoder_layers": size.audio_layers,
            "encoder_attention_heads": size.audio_heads,
            "encoder_ffn_dim": size.audio_ffn,
            "num_mel_bins": 128,
            "max_source_positions": frames // 2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tok),
            "hidden_size": size.hidden_size,
            "intermediate_size": size.intermediate_size,
            "num_hidden_layers": size.num_layers,
            "num_attention_heads": size.num_heads,
            "num_key_value_heads": size.num_kv_heads,
            "max_position_embeddings": 512,
            "eos_token_id": eos_id,
            "pad_token_id": pad_id,
        },
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    model_config.pad_token_id = pad_id
    model_config.eos_token_id = eos_id
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration._from_config(
        model_config, attn_implementation=attn_implementation
    )
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.do_sample = False
    model.config.mapo_synthetic_size = asdict(size)  # recorded so a saved checkpoint says how it was built
    return model.eval(), processor
