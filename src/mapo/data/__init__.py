"""Audio question-answering data: training JSONL files and mixtures (:mod:`mapo.data.qa`).

Everything public is re-exported here, so ``from mapo.data import load_audio_qa`` keeps working.
"""

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
