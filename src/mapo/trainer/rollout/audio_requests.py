"""vLLM requests for audio prompts: one placeholder per clip, the waveform as ``multi_modal_data``, suppression.

TRL hands vLLM the processor's prompt ids, in which the audio placeholder is already expanded to one token per
audio frame. vLLM's audio processors expand every placeholder they find again (a 136-token prompt became 210), so
each run is collapsed to ONE placeholder; vLLM's expansion then reproduces the processor's ids exactly, which
:func:`check_prompt_ids` verifies on every batch (the trainer scores the ids vLLM generated from).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...modality import ModalitySpec

logger = logging.getLogger(__name__)

#: logit_bias given to the audio placeholder and its markers: exp(-1e4) is 0 in every float format.
SUPPRESS_BIAS = -1e4


def collapse_placeholder_runs(ids: Sequence[int], placeholder_id: int) -> tuple[list[int], int]:
    """``ids`` with every run of ``placeholder_id`` replaced by one placeholder, and the number of runs."""
    out: list[int] = []
    runs = 0
    previous = None
    for tok in ids:
        tok = int(tok)
        if tok == placeholder_id and previous == placeholder_id:
            continue
        if tok == placeholder_id:
            runs += 1
        out.append(tok)
        previous = tok
    return out, runs


def placeholder_runs(ids: Sequence[int], placeholder_id: int) -> list[dict[str, int]]:
    """``[{"offset", "length"}]`` of each run of ``placeholder_id`` in ``ids`` (the server's ``mm_placeholders``)."""
    runs: list[dict[str, int]] = []
    i = 0
    n = len(ids)
    while i < n:
        if ids[i] == placeholder_id:
            j = i
            while j < n and ids[j] == placeholder_id:
                j += 1
            runs.append({"offset": i, "length": j - i})
            i = j
        else:
            i += 1
    return runs


def clip_for_processor(clip: Any, spec: ModalitySpec) -> np.ndarray:
    """``clip`` as float32 mono at ``spec.sampling_rate``, cut to what the family's processor keeps.

    The processors keep the first ``max_audio_seconds`` of a clip (Whisper's 30 s window) and drop the rest without
    a word; vLLM gets the same first seconds so the audio it hears is the audio the trainer scores with.
    """
    wave = np.asarray(clip, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(
            f"audio clips must be 1-D mono waveforms at {spec.sampling_rate} Hz, got shape {wave.shape}"
        )
    if spec.max_audio_seconds is not None:
        keep = int(round(spec.max_audio_seconds * spec.sampling_rate))
        if wave.shape[0] > keep:
            logger.warning(
                "an audio clip of %.1f s is longer than the %.0f s the %s processor keeps: vLLM gets its first "
                "%.0f s, like the trainer's features",
                wave.shape[0] / spec.sampling_rate,
                spec.max_audio_seconds,
                spec.family,
                spec.max_audio_seconds,
            )
            wave = wave[:keep]
    return wave


def audio_clips_of(prompts: list) -> list[np.ndarray]:
    """The one audio clip of each conversational prompt (``{"type": "audio", "audio": array}`` parts)."""
    clips = []
    for i, prompt in enumerate(prompts):
        found = [
            part["audio"]
            for message in prompt
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if isinstance(part, dict) and part.get("type") == "audio"
        ]
        if len(found) != 1:
            raise ValueError(f"prompt {i} has {len(found)} audio parts; vLLM rollouts need exactly one clip")
        if isinstance(found[0], str):
            raise ValueError(
                f"prompt {i}: the audio part holds a path ({found[0]!r}), not a waveform; load it first "
                "(mapo.data.AudioPromptTransform does)"
            )
        clips.append(found[0])
    return clips


def build_requests(prompt_ids: list[list[int]], clips: list[Any], spec: ModalitySpec) -> list[dict[str, Any]]:
    """One vLLM request per prompt: collapsed ids plus ``multi_modal_data={"audio": (wave, sampling_rate)}``."""
    if len(prompt_ids) != len(clips):
        raise ValueError(
            f"{len(prompt_ids)} prompts but {len(clips)} audio clips; one clip per prompt is needed"
        )
    requests = []
    for i, (ids, clip) in enumerate(zip(prompt_ids, clips, strict=True)):
        collapsed, runs = collapse_placeholder_runs(ids, spec.audio_token_id)
        if runs != 1:
            raise ValueError(
                f"prompt {i} has {runs} runs of the audio placeholder (id {spec.audio_token_id}); exactly one is "
                "needed for its one clip. Is the processor the model's own?"
            )
        requests.append(
            {
                "prompt_token_ids": collapsed,
                "multi_modal_data": {"audio": (clip_for_processor(clip, spec), spec.sampling_rate)},
            }
        )
    return requests


def check_prompt_ids(expected: list[list[int]], got: list[list[int]]) -> None:
    """Fail when vLLM expanded a prompt differently from the trainer's processor (e.g. 3000 vs 3001 mel frames).

    The trainer scores ``expected`` with its own audio features; a completion sampled after other ids would be
    trained against the wrong context, silently.
    """
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        a, b = list(map(int, a)), list(map(int, b))
        if a != b:
            first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise RuntimeError(
                f"vLLM expanded prompt {i} to {len(b)} tokens but the trainer's processor made {len(a)} (first "
                f"difference at position {first}). The audio placeholder count depends on the mel frame count: "
                "the processor and vLLM must see the same clip, sampling rate and feature-extractor settings."
            )


def suppression_bias(spec: ModalitySpec, extra_ids: Sequence[int] = ()) -> dict[int, float]:
    """``logit_bias`` that keeps vLLM from sampling the audio placeholder or its markers.

    The ``generate()`` path suppresses them through ``suppress_tokens``; TRL builds no generation kwargs on the vLLM
    path. One sampled placeholder makes the next scoring forward fail (audio features vs tokens mismatch).
    """
    ids = {spec.audio_token_id, *spec.marker_ids, *extra_ids}
    return {int(i): SUPPRESS_BIAS for i in sorted(ids)}
