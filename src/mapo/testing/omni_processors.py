"""Processors for the tiny Omni thinkers: audio-only stand-ins that load without torchvision, and the real Omni
processors on the tiny tokenizer (for the vLLM tests, which put a torchvision stand-in on the path).
"""

from __future__ import annotations

from .omni import _omni_audio_token_count
from .tokenizer import tiny_bpe_tokenizer

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
