"""Reading one audio clip from whatever a user has, and the long-audio policy.

A clip source may be:

* a path (``str`` or ``os.PathLike``), absolute or relative to ``base_dir`` (e.g. the data file's folder);
* a ``{"bytes": ..., "path": ...}`` dict: the ``datasets.Audio(decode=False)`` / parquet layout of the Hugging
  Face releases (MMSU, MMAU-Pro). The bytes are decoded when present; otherwise ``path`` is read;
* a decoded ``{"array": ..., "sampling_rate": ...}`` dict (``datasets.Audio`` of older ``datasets`` releases);
* a ``datasets.Audio(decode=True)`` value of ``datasets`` >= 4: a torchcodec ``AudioDecoder`` (anything with
  ``get_all_samples()``);
* a 1-D float array, taken to be at the target rate already.

Every clip comes back as mono float32 at the target rate: files and bytes are decoded with soundfile and resampled
with soxr (``soxr_hq``, output length ``ceil(n * target / source)``), the steps of transformers'
``load_audio(..., backend="soundfile")``, so a path read here equals ``load_audio`` of that path (tested).

Whatever goes wrong raises :class:`AudioReadError` (a ``ValueError``) naming the source and the reason; its
``code`` is one of ``missing``, ``undecodable``, ``empty``, ``too_short``, ``too_long``, ``unsupported``, so
callers can count failures by kind (an unscored eval item, a row listed by ``mapo check-data``).

**Too short.** The Whisper front-end of the three Qwen families gives no audio token for fewer than three mel
frames (up to 320 samples = 20 ms at 16 kHz) and the model then fails deep inside transformers;
:data:`MIN_AUDIO_SECONDS` (30 ms) keeps a margin and is the default ``min_seconds``.

**Long audio.** The processors keep at most ``ModalitySpec.max_audio_seconds`` (30 s) of a clip and drop the rest
without a word. A longer clip follows an explicit policy (:data:`LONG_AUDIO_POLICIES`):

* ``"error"`` (the training default): raise ``AudioReadError(code="too_long")``;
* ``"truncate"`` (the eval default): keep the first ``max_seconds``; logged and counted;
* ``"chunk"``: consecutive segments of at most ``max_seconds``, each one audio part of the prompt (for consumers
  whose prompts may hold several audio parts, as the Qwen2-Audio / Qwen2.5-Omni / Qwen3-Omni chat templates do);
  a tail shorter than ``min_seconds`` is dropped and counted.

A :class:`LongAudioCounter` counts what the policy did; its :meth:`~LongAudioCounter.summary` is the line a run
prints at the end.

API::

    reader = ClipReader.for_spec(spec, policy="truncate", base_dir="data/")   # or ClipReader(sampling_rate=...)
    segments = reader.read(row["audio"], where="train.jsonl:12 id=mus-1")     # list of 1-D float32 arrays
    print(reader.counter.summary())
    wave = read_clip(source, 16000, base_dir=...)                              # decode only, no length policy
    seconds = clip_seconds(source, base_dir=...)                               # duration without decoding
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LONG_AUDIO_POLICIES",
    "MIN_AUDIO_SECONDS",
    "AudioReadError",
    "ClipReader",
    "LongAudioCounter",
    "apply_long_audio_policy",
    "clip_seconds",
    "read_clip",
]

logger = logging.getLogger(__name__)

#: What to do with a clip longer than the processor keeps (module docstring).
LONG_AUDIO_POLICIES: tuple[str, ...] = ("error", "truncate", "chunk")

#: Shortest clip accepted by default (seconds); see "Too short" in the module docstring.
MIN_AUDIO_SECONDS = 0.03

ERROR_CODES: tuple[str, ...] = ("missing", "undecodable", "empty", "too_short", "too_long", "unsupported")


class AudioReadError(ValueError):
    """A clip could not be used. ``source`` describes it, ``reason`` says why, ``code`` is the kind of failure
    (one of ``missing``, ``undecodable``, ``empty``, ``too_short``, ``too_long``, ``unsupported``)."""

    def __init__(self, source: str, reason: str, code: str, where: str = "") -> None:
        self.source, self.reason, self.code, self.where = source, reason, code, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}cannot use audio {source}: {reason}")


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


def _resolve_path(path: str | os.PathLike, base_dir: str | None) -> str:
    path = os.fspath(path)
    if base_dir is not None and not os.path.isabs(path):
        return os.path.join(base_dir, path)
    return path


def _describe(source: Any, base_dir: str | None) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(_resolve_path(source, base_dir))
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            name = f" of {source['path']!r}" if source.get("path") else ""
            return f"bytes{name} ({len(source['bytes'])} bytes)"
        if source.get("path"):
            return repr(_resolve_path(source["path"], base_dir))
        if "array" in source:
            return f"array (sampling_rate={source.get('sampling_rate')})"
        return f"dict with keys {sorted(source)}"
    if hasattr(source, "get_all_samples"):
        return f"{type(source).__name__} (datasets.Audio value)"
    shape = getattr(source, "shape", None)
    return f"array of shape {shape}" if shape is not None else type(source).__name__


def _resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """soxr_hq resampling padded/trimmed to ``ceil(n * target / source)`` samples (transformers' soundfile
    backend, identical to ``librosa.load``)."""
    if source_rate == target_rate:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import soxr

    n = math.ceil(wave.shape[-1] * target_rate / source_rate)
    out = soxr.resample(wave, source_rate, target_rate, quality="soxr_hq")
    return np.ascontiguousarray(np.pad(out, (0, max(0, n - len(out))))[:n], dtype=np.float32)


def _mono(wave: np.ndarray, channels_first: bool) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # downmix by averaging, as librosa / transformers do
        wave = wave.mean(axis=0 if channels_first else 1)
    return wave


def _decode_file(file: str | io.BytesIO) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(file) as fh:
        rate = fh.samplerate
        wave = fh.read(dtype="float32", always_2d=True)
    return _mono(wave, channels_first=False), int(rate)


def _decode(source: Any, base_dir: str | None, desc: str, where: str) -> tuple[np.ndarray, int | None]:
    """(waveform, its sampling rate or None = already at the target rate)."""
    if (
        isinstance(source, dict)
        and source.get("bytes") is None
        and source.get("path")
        and "array" not in source
    ):
        source = source["path"]  # datasets.Audio(decode=False) of a file on disk
    if isinstance(source, (str, os.PathLike)):
        path = _resolve_path(source, base_dir)
        if not os.path.exists(path):
            raise AudioReadError(desc, "file not found", "missing", where)
        if os.path.isdir(path):
            raise AudioReadError(desc, "is a folder, not an audio file", "missing", where)
        try:
            return _decode_file(path)
        except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
            raise AudioReadError(desc, f"not decodable audio ({err})", "undecodable", where) from err
    if isinstance(source, dict) and source.get("bytes") is not None:
        data = source["bytes"]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AudioReadError(
                desc, f"'bytes' must be bytes, got {type(data).__name__}", "unsupported", where
            )
        if len(data) == 0:
            raise AudioReadError(desc, "no bytes", "empty", where)
        try:
            return _decode_file(io.BytesIO(bytes(data)))
        except Exception as err:
            raise AudioReadError(desc, f"not decodable audio ({err})", "undecodable", where) from err
    if isinstance(source, dict) and "array" in source:
        rate = source.get("sampling_rate")
        return _mono(np.asarray(source["array"]), channels_first=True), None if rate is None else int(rate)
    if hasattr(source, "get_all_samples"):  # datasets >= 4 decodes Audio columns to torchcodec AudioDecoders
        try:
            samples = source.get_all_samples()
            return _mono(samples.data.cpu().numpy(), channels_first=True), int(samples.sample_rate)
        except Exception as err:
            raise AudioReadError(desc, f"not decodable audio ({err})", "undecodable", where) from err
    if isinstance(source, (np.ndarray, list, tuple)) or hasattr(source, "__array__"):
        return np.asarray(source, dtype=np.float32), None
    if source is None:
        raise AudioReadError("None", "no audio given (the audio field is empty)", "missing", where)
    raise AudioReadError(
        desc,
        "unsupported audio value; give a path, a {'bytes', 'path'} dict, an {'array', 'sampling_rate'} dict, a "
        "datasets.Audio value or a 1-D float array",
        "unsupported",
        where,
    )


def read_clip(
    source: Any,
    sampling_rate: int = 16000,
    *,
    base_dir: str | None = None,
    where: str = "",
    min_seconds: float = MIN_AUDIO_SECONDS,
) -> np.ndarray:
    """Decode ``source`` (module docstring) to a mono float32 waveform at ``sampling_rate``.

    Raises :class:`AudioReadError` when the clip is missing, undecodable, empty, not 1-D, not finite, or shorter
    than ``min_seconds``. No long-audio policy here (see :class:`ClipReader`).
    """
    desc = _describe(source, base_dir)
    wave, rate = _decode(source, base_dir, desc, where)
    if wave.ndim != 1:
        raise AudioReadError(desc, f"expected a 1-D waveform, got shape {wave.shape}", "unsupported", where)
    if wave.size == 0:
        raise AudioReadError(desc, "the clip has no samples", "empty", where)
    if not np.isfinite(wave).all():
        raise AudioReadError(desc, "the waveform contains NaN or inf", "undecodable", where)
    wave = (
        _resample(wave, rate, sampling_rate) if rate is not None else np.ascontiguousarray(wave, np.float32)
    )
    seconds = wave.size / sampling_rate
    if seconds < min_seconds:
        raise AudioReadError(
            desc,
            f"{1000 * seconds:.1f} ms is too short: the processor needs at least {1000 * min_seconds:.0f} ms to "
            "produce an audio token",
            "too_short",
            where,
        )
    return wave


def clip_seconds(
    source: Any, sampling_rate: int = 16000, *, base_dir: str | None = None, where: str = ""
) -> float:
    """Duration of ``source`` in seconds, from the file header when possible (no decoding, no resampling); a bare
    array is taken to be at ``sampling_rate``."""
    desc = _describe(source, base_dir)
    file: str | io.BytesIO | None = None
    if isinstance(source, dict) and source.get("bytes") is not None:
        file = io.BytesIO(bytes(source["bytes"]))
    elif isinstance(source, (str, os.PathLike)) or (isinstance(source, dict) and source.get("path")):
        path = _resolve_path(source if not isinstance(source, dict) else source["path"], base_dir)
        if not os.path.exists(path):
            raise AudioReadError(desc, "file not found", "missing", where)
        file = path
    if file is None:
        wave, rate = _decode(source, base_dir, desc, where)
        return wave.shape[-1] / (rate or sampling_rate)
    import soundfile as sf

    try:
        info = sf.info(file)
    except Exception as err:
        raise AudioReadError(desc, f"not decodable audio ({err})", "undecodable", where) from err
    return info.frames / info.samplerate


# ---------------------------------------------------------------------------------------------------------------
# Long-audio policy
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LongAudioCounter:
    """What the long-audio policy did over a run.

    Attributes:
        policy / max_seconds: the policy applied and the limit (seconds).
        clips: clips seen; affected: clips longer than ``max_seconds``; longest_seconds: the longest of them.
        seconds_dropped: audio the model never hears (truncated parts, chunk tails shorter than ``min_seconds``).
        extra_segments: audio parts added by ``chunk`` beyond the first of each clip.
    """

    policy: str = "truncate"
    max_seconds: float | None = None
    clips: int = 0
    affected: int = 0
    longest_seconds: float = 0.0
    seconds_dropped: float = 0.0
    extra_segments: int = 0

    def summary(self) -> str:
        """One line for the end of a run, e.g. ``long audio (> 30 s, policy truncate): 2 of 10 clips truncated
        to 30 s (longest 45.0 s, 30.0 s of audio dropped)``."""
        if self.max_seconds is None:
            return f"long audio: no limit known for this model family ({self.clips} clips read, none checked)"
        head = f"long audio (> {self.max_seconds:g} s, policy {self.policy}): "
        if not self.affected:
            return head + f"none of {self.clips} clips affected"
        verb = {"truncate": f"truncated to {self.max_seconds:g} s", "chunk": "split into segments"}.get(
            self.policy, "rejected"
        )
        details = [f"longest {self.longest_seconds:.1f} s"]
        if self.policy == "chunk":
            details.append(f"{self.extra_segments} extra audio parts")
        if self.seconds_dropped:
            details.append(f"{self.seconds_dropped:.1f} s of audio dropped")
        return head + f"{self.affected} of {self.clips} clips {verb} ({', '.join(details)})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "max_seconds": self.max_seconds,
            "clips": self.clips,
            "affected": self.affected,
            "longest_seconds": round(self.longest_seconds, 3),
            "seconds_dropped": round(self.seconds_dropped, 3),
            "extra_segments": self.extra_segments,
        }


def apply_long_audio_policy(
    wave: np.ndarray,
    sampling_rate: int,
    max_seconds: float | None,
    policy: str,
    *,
    counter: LongAudioCounter | None = None,
    min_seconds: float = MIN_AUDIO_SECONDS,
    source: str = "clip",
    where: str = "",
) -> list[np.ndarray]:
    """The audio parts the model gets for ``wave`` under ``policy`` (module docstring); counts into ``counter``.

    Returns ``[wave]`` when the clip fits (or ``max_seconds`` is ``None``), ``[wave[:limit]]`` for ``truncate``,
    consecutive segments of at most ``limit`` samples for ``chunk``; raises ``AudioReadError(code="too_long")``
    for ``error``.
    """
    if policy not in LONG_AUDIO_POLICIES:
        raise ValueError(f"long-audio policy must be one of {LONG_AUDIO_POLICIES}, got {policy!r}")
    if counter is not None:
        counter.clips += 1
    if max_seconds is None:
        return [wave]
    limit = int(round(max_seconds * sampling_rate))
    if wave.size <= limit:
        return [wave]
    seconds = wave.size / sampling_rate
    if counter is not None:
        counter.affected += 1
        counter.longest_seconds = max(counter.longest_seconds, seconds)
    if policy == "error":
        raise AudioReadError(
            source,
            f"the clip lasts {seconds:.1f} s but the processor keeps only the first {max_seconds:g} s and would "
            "drop the rest silently; cut the clip, or choose the long-audio policy 'truncate' (keep the first "
            f"{max_seconds:g} s) or 'chunk' (several audio parts)",
            "too_long",
            where,
        )
    if policy == "truncate":
        parts = [wave[:limit]]
        dropped = (wave.size - limit) / sampling_rate
    else:
        parts = [wave[i : i + limit] for i in range(0, wave.size, limit)]
        dropped = 0.0
        if len(parts) > 1 and parts[-1].size < min_seconds * sampling_rate:
            dropped = parts.pop().size / sampling_rate  # too short to give an audio token
    if counter is not None:
        counter.seconds_dropped += dropped
        counter.extra_segments += len(parts) - 1
        first = counter.affected == 1
    else:
        first = True
    # The first affected clip is a warning; the rest are counted in the summary line (a run may have hundreds).
    (logger.warning if first else logger.debug)(
        "%s%s lasts %.1f s > %g s: %s%s",
        f"{where}: " if where else "",
        source,
        seconds,
        max_seconds,
        f"kept the first {max_seconds:g} s"
        if policy == "truncate"
        else f"split into {len(parts)} audio parts",
        "; further long clips are counted in the long-audio summary" if first else "",
    )
    return parts


@dataclass
class ClipReader:
    """Reads clips (any source, module docstring) and applies the long-audio policy, counting as it goes.

    Attributes:
        sampling_rate: the target rate (the feature extractor's; ``ModalitySpec.sampling_rate``).
        max_seconds: the longest clip the processor keeps (``ModalitySpec.max_audio_seconds``); ``None`` = no check.
        policy: ``"error"`` | ``"truncate"`` | ``"chunk"`` (:data:`LONG_AUDIO_POLICIES`).
        min_seconds: shorter clips raise ``AudioReadError(code="too_short")``.
        base_dir: folder that relative paths are resolved against.
        counter: the :class:`LongAudioCounter` of this reader (its ``summary()`` is the run's line).
    """

    sampling_rate: int = 16000
    max_seconds: float | None = None
    policy: str = "error"
    min_seconds: float = MIN_AUDIO_SECONDS
    base_dir: str | None = None
    counter: LongAudioCounter = field(default_factory=LongAudioCounter)

    def __post_init__(self) -> None:
        if self.policy not in LONG_AUDIO_POLICIES:
            raise ValueError(f"long-audio policy must be one of {LONG_AUDIO_POLICIES}, got {self.policy!r}")
        if self.sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {self.sampling_rate}")
        self.counter.policy, self.counter.max_seconds = self.policy, self.max_seconds

    @classmethod
    def for_spec(cls, spec: Any, policy: str = "error", **kwargs: Any) -> ClipReader:
        """A reader with the family's facts: ``spec.sampling_rate`` and ``spec.max_audio_seconds`` of a
        :class:`mapo.modality.ModalitySpec`."""
        kwargs.setdefault("sampling_rate", int(spec.sampling_rate))
        kwargs.setdefault("max_seconds", spec.max_audio_seconds)
        return cls(policy=policy, **kwargs)

    def read(self, source: Any, where: str = "") -> list[np.ndarray]:
        """The audio parts of ``source``: one waveform, or several under the ``chunk`` policy."""
        wave = read_clip(
            source, self.sampling_rate, base_dir=self.base_dir, where=where, min_seconds=self.min_seconds
        )
        return apply_long_audio_policy(
            wave,
            self.sampling_rate,
            self.max_seconds,
            self.policy,
            counter=self.counter,
            min_seconds=self.min_seconds,
            source=_describe(source, self.base_dir),
            where=where,
        )
