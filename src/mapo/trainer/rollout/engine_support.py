"""Settings and lifecycle of the vLLM engine that need neither TRL nor vLLM at import: mapo's vLLM options, the CPU
engine's environment defaults, the engine dtype, per-prompt modality limits, the audio payload of server requests,
and freeing a colocate engine. :mod:`.engine` (TRL's backend with audio) and :mod:`.serve` build on them.
"""

from __future__ import annotations

import base64
import gc
import io
import json
import os
from dataclasses import dataclass

import numpy as np

from ...modality import ModalitySpec
from .checkpoint import OMNI_FULL_MODEL

WEIGHT_SYNC_MODES = ("auto", "nccl", "reload")

#: CPU engine settings that work on a small shared machine (vLLM's CPU backend ignores gpu_memory_utilization).
CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


@dataclass
class VLLMAudioOptions:
    """mapo's vLLM settings beyond ``GRPOConfig``'s (read from the config with these defaults).

    Attributes:
        vllm_weight_sync: server mode only: ``"auto"`` (NCCL when the trainer is on CUDA and the server has a
            weight-transfer engine, else ``"reload"``), ``"nccl"`` or ``"reload"`` (save the weights to
            ``vllm_sync_dir`` and have the server reload them).
        vllm_sync_dir: directory for ``"reload"``; the server must see it at the same path. Default
            ``<output_dir>/vllm-sync``.
        vllm_drift_tolerance: largest mean |log p_vLLM - log p_trainer| (nats per completion token) accepted in the
            first generation after a weight sync; beyond it training stops with an error. ``None`` = no check.
        vllm_llm_kwargs: extra ``vllm.LLM`` arguments in colocate mode (e.g. ``{"enforce_eager": True}``).
    """

    vllm_weight_sync: str = "auto"
    vllm_sync_dir: str | None = None
    vllm_drift_tolerance: float | None = 0.05
    vllm_llm_kwargs: dict | None = None

    @classmethod
    def from_args(cls, args) -> VLLMAudioOptions:
        values = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        options = cls(**values)
        if isinstance(options.vllm_llm_kwargs, str):  # command line / YAML: a JSON object
            options.vllm_llm_kwargs = json.loads(options.vllm_llm_kwargs)
        if options.vllm_weight_sync not in WEIGHT_SYNC_MODES:
            raise ValueError(
                f"vllm_weight_sync must be one of {WEIGHT_SYNC_MODES}, got {options.vllm_weight_sync!r}"
            )
        if options.vllm_drift_tolerance is not None and options.vllm_drift_tolerance <= 0:
            raise ValueError(
                f"vllm_drift_tolerance must be > 0 nats (or None to disable), got {options.vllm_drift_tolerance}"
            )
        return options


def _on_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def apply_cpu_env_defaults() -> dict[str, str]:
    """Set :data:`CPU_ENV_DEFAULTS` where the user has not; returns what was set (logged by the caller)."""
    applied = {}
    for key, value in CPU_ENV_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied


def wav_base64(wave: np.ndarray, sampling_rate: int) -> str:
    """A float32 WAV (no int16 quantisation) as base64, the OpenAI ``input_audio`` payload."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sampling_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def engine_dtype(model, args) -> str:
    """The dtype the policy computes in: its own, or bf16/fp16 when a float32 policy trains under autocast."""
    dtype = str(getattr(model, "dtype", "float32")).removeprefix("torch.")
    if dtype == "float32" and getattr(args, "bf16", False):
        return "bfloat16"
    if dtype == "float32" and getattr(args, "fp16", False):
        return "float16"
    return dtype


def limit_mm_per_prompt(spec: ModalitySpec) -> dict[str, int]:
    """One clip per prompt; the Omni families also get image/video limits of 0 (no vision profiling)."""
    if spec.family in OMNI_FULL_MODEL:
        return {"audio": 1, "image": 0, "video": 0}
    return {"audio": 1}


def release_engine(trainer) -> None:
    """Free a colocate trainer's vLLM engine so that another engine can start in this process.

    vLLM keeps its parallel groups in module globals; an MoE engine started after a dense one finds no
    expert-parallel group unless they are torn down (vLLM's own tests call ``cleanup_dist_env_and_memory`` between
    engines). ``None`` is accepted (nothing was built).
    """
    if trainer is None:
        return
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    generation = getattr(trainer, "vllm_generation", None)
    if generation is not None and hasattr(generation, "llm"):
        del generation.llm
    del trainer
    gc.collect()
    cleanup_dist_env_and_memory()
