"""Audio question-answering data: training JSONL files and mixtures (:mod:`mapo.data.qa`); reading one clip from
any source, with the long-audio policy (:mod:`mapo.data.clips`).

Everything public is re-exported here, so ``from mapo.data import load_audio_qa`` keeps working.
"""

from .clips import (
    LONG_AUDIO_POLICIES,
    AudioReadError,
    ClipReader,
    LongAudioCounter,
    clip_seconds,
    read_clip,
)
from .qa import (
    DEFAULT_INSTRUCTION,
    REQUIRED_COLUMNS,
    AudioPromptTransform,
    audio_prompt,
    count_audio_parts,
    format_question,
    load_audio_qa,
    mixture_counts,
    normalise_prompt,
    with_audio_prompts,
)

__all__ = [
    "LONG_AUDIO_POLICIES",
    "AudioReadError",
    "ClipReader",
    "LongAudioCounter",
    "clip_seconds",
    "read_clip",
    "DEFAULT_INSTRUCTION",
    "REQUIRED_COLUMNS",
    "AudioPromptTransform",
    "audio_prompt",
    "count_audio_parts",
    "format_question",
    "load_audio_qa",
    "mixture_counts",
    "normalise_prompt",
    "with_audio_prompts",
]
