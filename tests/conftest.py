"""Suite-wide set-up that must run before anything imports transformers."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

#: TEST-ONLY torchvision stand-in for the vLLM tests of the Omni thinkers: vLLM's and transformers' Omni processors
#: import torchvision (a video processor), and PyPI's torchvision is a CUDA build that cannot load beside the CPU
#: torch. transformers decides once, at import, whether torchvision exists, so the stand-in goes on the path here,
#: and only where vLLM is installed and no real torchvision is (the .venv-vllm of `make test`).
TORCHVISION_STUB = Path(__file__).parent / "trainer" / "rollout" / "_torchvision_stub"

if importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(TORCHVISION_STUB))
    # vLLM inspects model classes in a subprocess: it must see the stand-in too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TORCHVISION_STUB), os.environ.get("PYTHONPATH")) if p
    )


# ---------------------------------------------------------------------------------------------------------------
# The tiny Qwen2-Audio with generated completions, shared by tests/diagnostics and tests/probe (key attention)
# ---------------------------------------------------------------------------------------------------------------

import pytest  # noqa: E402  (after the stand-in set-up above, which must run first)

#: clip lengths of the three evaluation items, seconds
TONE_SECONDS = (1.0, 0.75, 0.5)


def tone_items(paths=None, n=3):
    """``n`` three-way tone questions as ``mapo.eval.EvalItem`` (audio = ``paths`` or placeholder names)."""
    from mapo.eval import EvalItem

    return [
        EvalItem(
            id=f"it{i}",
            benchmark="mmau",
            group=("sound", "music", "speech")[i % 3],
            kind="choice",
            audio=[paths[i] if paths else f"clip{i}.wav"],
            question="Which tone is it?",
            choices=["low", "mid", "high"],
            answer=("low", "mid", "high")[i % 3],
            meta={"task": ("a", "b")[i % 2]},
        )
        for i in range(n)
    ]


def tone_clips(n=3):
    """One sine clip per item of :func:`tone_items` (lengths :data:`TONE_SECONDS`)."""
    from mapo.testing import sine_clip

    return [[sine_clip(220.0 * (i + 1), seconds=TONE_SECONDS[i % 3], seed=i)] for i in range(n)]


@pytest.fixture(scope="session", name="tone_items")
def _tone_items():
    return tone_items


@pytest.fixture(scope="session", name="tone_clips")
def _tone_clips():
    return tone_clips


@pytest.fixture(scope="module")
def tiny():
    """A 3-layer tiny random Qwen2-Audio and its offline processor."""
    from mapo.testing import tiny_qwen2_audio, tiny_qwen2_audio_processor

    processor = tiny_qwen2_audio_processor()
    return tiny_qwen2_audio(tokenizer=processor.tokenizer, num_layers=3), processor


@pytest.fixture(scope="module")
def generated(tiny):
    """Greedy completions (8 new tokens) of :func:`tiny` for the three tone items: (batch, ids, mask)."""
    from mapo.eval import GenerationSettings, encode_prompts, generate_batch

    model, processor = tiny
    settings = GenerationSettings(max_new_tokens=8)
    batch = encode_prompts(model, processor, tone_items(), settings, tone_clips())
    ids, mask = generate_batch(model, processor, batch, settings)
    return batch, ids, mask
