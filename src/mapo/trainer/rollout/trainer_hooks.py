"""``VLLMAudioRollouts``: the trainer side of audio rollouts through vLLM (a mixin of ``AudioGRPOTrainer``).

What it adds to TRL's ``GRPOTrainer`` when ``use_vllm=True`` (nothing otherwise):

* ``__init__``: TRL builds :class:`~mapo.trainer.rollout.engine.AudioVLLMGeneration` instead of its
  ``VLLMGeneration`` (same arguments plus the family's fact sheet);
* ``_tokenize_prompts``: keep each prompt's clip; ``_generate_single_turn``: hand the clips to the engine around
  TRL's generate call;
* ``_generate_and_score_completions``: the drift check — in the first generation after a weight sync, the mean
  |log p_vLLM − log p_trainer| of the sampled tokens must stay within ``vllm_drift_tolerance``, else training stops
  (a stale or mis-named sync would otherwise train on off-policy samples without a word). The value is logged as
  ``vllm/sync_logp_drift``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from ...modality import KNOWN_AUDIO_FEATURE_KWARGS
from .audio_requests import audio_clips_of

logger = logging.getLogger(__name__)


def logp_drift(
    trainer_logps: torch.Tensor, sampling_logps: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of |trainer − sampling| log-probs over the valid (mask=1, non-NaN) completion tokens."""
    delta = (trainer_logps.float() - sampling_logps.float()).abs()
    valid = mask.bool() & ~torch.isnan(delta)
    return delta[valid].sum(), valid.sum().to(delta.dtype)


class VLLMDriftError(RuntimeError):
    """vLLM's log-probs of its own samples disagree with the trainer's right after a weight sync."""


class VLLMAudioRollouts:
    """Mixin for ``GRPOTrainer`` subclasses whose prompts carry one audio clip (see the module docstring)."""

    def __init__(self, model, reward_funcs=None, args=None, *a: Any, **kw: Any):
        self._vllm_clips: list | None = None
        with self._audio_vllm_backend(args):
            super().__init__(model, reward_funcs, args, *a, **kw)
        if getattr(args, "use_vllm", False):
            from .engine_support import VLLMAudioOptions

            self._vllm_options = VLLMAudioOptions.from_args(args)
            if self._vllm_options.vllm_drift_tolerance is None:
                logger.warning("vllm_drift_tolerance=None: vLLM's weight sync is not checked")

    @contextlib.contextmanager
    def _audio_vllm_backend(self, args) -> Iterator[None]:
        """While TRL's ``__init__`` runs, its ``VLLMGeneration`` is the audio engine."""
        if not getattr(args, "use_vllm", False):
            yield
            return
        import trl.trainer.grpo_trainer as grpo_module

        from .engine import AudioVLLMGeneration
        from .engine_support import VLLMAudioOptions, engine_dtype

        options = VLLMAudioOptions.from_args(args)  # validate before the engine starts
        trainer = self

        def build(**kwargs: Any) -> AudioVLLMGeneration:
            # self.modality is set by the audio trainer before TRL's __init__ builds the engine
            return AudioVLLMGeneration(
                modality=trainer.modality,
                options=options,
                work_dir=args.output_dir,
                dtype=engine_dtype(kwargs["model"], args),
                **kwargs,
            )

        original = grpo_module.VLLMGeneration
        grpo_module.VLLMGeneration = build
        try:
            yield
        finally:
            grpo_module.VLLMGeneration = original

    def _tokenize_prompts(self, prompts: list):
        if self.use_vllm:
            self._vllm_clips = audio_clips_of(prompts)
        return super()._tokenize_prompts(prompts)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *a, **kw):
        if not self.use_vllm:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, *a, **kw
            )
        with self.vllm_generation.audio_clips(self._vllm_clips):
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, *a, **kw
            )

    def _generate_and_score_completions(self, inputs):
        if not self.use_vllm:
            return super()._generate_and_score_completions(inputs)
        syncs_before = self.vllm_generation.syncs
        output = super()._generate_and_score_completions(inputs)
        if self.vllm_generation.syncs > syncs_before:
            self._check_sync_drift(output)
        return output

    def _check_sync_drift(self, output: dict) -> None:
        tolerance = self._vllm_options.vllm_drift_tolerance
        sampling = output.get("sampling_per_token_logps")
        if tolerance is None or sampling is None:
            return
        trainer_logps = output.get("old_per_token_logps")
        if trainer_logps is None:  # TRL computes them only for the IS correction: one extra scoring forward
            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            # inside AudioGRPOTrainer the pending audio is already visible to scoring forwards; a subclass that adds
            # the features to the output first is served from there
            audio = {k: output[k] for k in KNOWN_AUDIO_FEATURE_KWARGS if k in output}
            visible = self.audio_visible(audio) if audio else contextlib.nullcontext()
            with torch.no_grad(), visible:
                trainer_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model,
                    ids,
                    mask,
                    output["completion_ids"].size(1),
                    batch_size=self.args.per_device_train_batch_size,
                )
        total, count = logp_drift(trainer_logps, sampling, output["completion_mask"])
        stats = self.accelerator.gather(torch.stack([total, count]).view(1, 2)).view(-1, 2).sum(0)
        drift = (stats[0] / stats[1].clamp(min=1)).item()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["vllm/sync_logp_drift"].append(drift)
        if self.vllm_generation.last_sync_seconds is not None:
            self._metrics[mode]["vllm/sync_seconds"].append(self.vllm_generation.last_sync_seconds)
        if drift > tolerance:
            raise VLLMDriftError(
                f"after weight sync {self.vllm_generation.syncs} ({self.vllm_generation.weight_sync_mode}), vLLM's "
                f"log-probs of its sampled tokens differ from the trainer's by {drift:.4f} nats per token on average "
                f"(tolerance vllm_drift_tolerance={tolerance}). vLLM is generating with other weights than the "
                "policy being trained (stale or mis-named sync) or other inputs. Check the sync logs; raise the "
                "tolerance only for a known numeric gap (e.g. bf16 engine vs fp32 trainer)."
            )
