"""Audio rollouts through vLLM for the audio trainers (colocate and server mode); see docs/vllm.md.

* :mod:`.audio_requests` — vLLM requests from TRL's prompt ids and the clips (one placeholder per clip,
  ``multi_modal_data``, ``logit_bias`` suppression of the placeholder and its markers);
* :mod:`.checkpoint` — the policy's weights under vLLM's checkpoint names (full-Omni layout for the thinkers);
* :mod:`.engine` — :class:`AudioVLLMGeneration`, TRL's vLLM backend with audio, weight sync and cache resets;
* :mod:`.engine_support` — mapo's vLLM options, CPU engine defaults, engine dtype, modality limits, the server's
  audio payload, :func:`~.engine_support.release_engine` (no TRL or vLLM import);
* :mod:`.trainer_hooks` — :class:`VLLMAudioRollouts`, the trainer mixin (clips hand-over, the drift check);
* :mod:`.parity` — log-probs of a fixed completion from vLLM and from the policy (the check of a weight sync);
* :mod:`.serve` — ``mapo vllm-serve``.

Importing this package does not import vLLM; the engine does, when it is built.
"""

from .audio_requests import build_requests, collapse_placeholder_runs, placeholder_runs, suppression_bias
from .checkpoint import is_vllm_loadable, save_vllm_checkpoint, to_vllm_names, vllm_state_dict
from .trainer_hooks import VLLMAudioRollouts, VLLMDriftError, logp_drift

__all__ = [
    "VLLMAudioRollouts",
    "VLLMDriftError",
    "build_requests",
    "collapse_placeholder_runs",
    "is_vllm_loadable",
    "logp_drift",
    "placeholder_runs",
    "save_vllm_checkpoint",
    "suppression_bias",
    "to_vllm_names",
    "vllm_state_dict",
]
