"""Real waveforms for the real feature extractors."""

from __future__ import annotations

import numpy as np


def sine_clip(freq_hz: float = 440.0, seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A float32 tone with a little noise: a real waveform for the real feature extractors."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq_hz * t) + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)
