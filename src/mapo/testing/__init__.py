"""Tiny random-weight models and offline processors built from real architecture configs.

Nothing here downloads anything: tokenizers are trained in memory with ``tokenizers`` and the models are
random-initialised from the real ``transformers`` classes, so tests, benchmarks and examples exercise the same
code paths as a 7B checkpoint at a size that runs in milliseconds on a CPU.

Three families are covered: Qwen2-Audio (with a real ``Qwen2AudioProcessor``), the Qwen2.5-Omni thinker and
the Qwen3-Omni-MoE thinker. The Omni processors need torchvision (a video processor) which does not load beside
the CPU torch build, so for those families :func:`omni_audio_inputs` builds the model inputs directly with the
real feature extractor and the real placeholder-expansion formula.

Modules, one job each (import the names from ``mapo.testing``):

* ``tokenizer``: the tiny byte-level BPE tokenizer with the Qwen special tokens;
* ``tagger``: a tiny NLTK perceptron POS tagger trained offline;
* ``audio``: test waveforms (:func:`sine_clip`);
* ``qwen2_audio``: the tiny Qwen2-Audio model and its processor;
* ``omni``: the tiny Qwen2.5-Omni / Qwen3-Omni-MoE thinkers and their audio inputs;
* ``omni_processors``: processors for the tiny Omni thinkers (audio-only stand-ins and the real ones);
* ``for_vllm``: tiny models with the shapes vLLM's CPU engine needs;
* ``real_shapes``: random-weight models at the real checkpoints' shapes.

Test fixtures, not product: nothing under ``mapo`` but this package imports it (``tests/test_layers.py``).
"""

from __future__ import annotations

from mapo.synthetic.bpe import train_byte_level_bpe

from .audio import sine_clip
from .for_vllm import save_tiny_omni_for_vllm, tiny_qwen2_audio_for_vllm
from .omni import TinyOmni, omni_audio_inputs, tiny_qwen3_omni_thinker, tiny_qwen25_omni_thinker
from .omni_processors import tiny_omni_processor, tiny_qwen3_omni_processor, tiny_real_omni_processor
from .qwen2_audio import tiny_qwen2_audio, tiny_qwen2_audio_processor
from .real_shapes import REAL_SHAPES, real_shape_config, real_shape_model
from .tagger import tiny_perceptron_tagger
from .tokenizer import _CORPUS as _CORPUS  # private, read by the POS-gate tests
from .tokenizer import TINY_SPECIAL_TOKENS, TINY_TEMPLATE_TOKENS, tiny_bpe_tokenizer
from .tokenizer import _special_id as _special_id  # private, read by benchmarks/rollout_throughput.py

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
