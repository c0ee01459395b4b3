"""``AudioVLLMGeneration``: TRL 1.16's ``VLLMGeneration`` with audio, for colocate and server mode.

TRL's class passes only images to vLLM and fails for the audio families at five places (measured on vLLM 0.30):

1. weight names: it sends live transformers names (``model.language_model.*``); vLLM loads checkpoint names
   (``language_model.model.*``, ``thinker.*`` for Omni) -> :func:`mapo.trainer.rollout.checkpoint.to_vllm_names`;
2. no audio reaches vLLM -> the trainer hands the clips over (:meth:`AudioVLLMGeneration.audio_clips`);
3. the placeholder run is expanded twice -> one placeholder per clip
   (:func:`mapo.trainer.rollout.audio_requests.build_requests`);
4. on CPU the per-tensor ``load_weights`` cannot reach vLLM's packed linear weights (silently stale) -> vLLM's
   layerwise ``reload_weights`` (colocate: from the tensors; server without NCCL: from a saved file);
5. only the prefix cache is reset, so audio embeddings of the old weights are reused -> the encoder cache is reset
   after every sync.

Weight sync in server mode is chosen once and logged: TRL's NCCL path when the trainer is on CUDA and the server
has a weight-transfer engine, otherwise ``save + reload`` through a directory both sides see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, gather_object, is_peft_model
from trl.generation import vllm_generation as trl_vllm_generation
from trl.generation.vllm_generation import VLLMGeneration, extract_logprobs

from ...modality import ModalitySpec
from .audio_requests import (
    audio_clips_of,
    build_requests,
    check_prompt_ids,
    clip_for_processor,
    placeholder_runs,
    suppression_bias,
)
from .checkpoint import (
    is_vllm_loadable,
    save_vllm_checkpoint,
    save_vllm_weights,
    to_vllm_names,
)
from .engine_support import (  # noqa: F401  (re-exported: the names lived here before)
    CPU_ENV_DEFAULTS,
    WEIGHT_SYNC_MODES,
    VLLMAudioOptions,
    _on_cpu_platform,
    apply_cpu_env_defaults,
    engine_dtype,
    limit_mm_per_prompt,
    wav_base64,
)

logger = logging.getLogger(__name__)


class AudioVLLMGeneration(VLLMGeneration):
    """TRL's vLLM backend with audio prompts, checkpoint-name weight sync and encoder-cache resets.

    Built by the audio trainers in place of ``VLLMGeneration`` (same arguments, plus the family's fact sheet and
    the engine's ``dtype``: vLLM's ``"auto"`` downcasts a float32 checkpoint to bfloat16, 2-3e-3 nats off an fp32
    policy on the tiny model, so the trainers ask for the dtype the policy computes in).
    The trainer hands each generation batch's clips over with :meth:`audio_clips` around TRL's ``generate`` call.
    """

    def __init__(
        self,
        *args: Any,
        modality: ModalitySpec,
        options: VLLMAudioOptions | None = None,
        work_dir: str = ".",
        dtype: str | None = None,
        **kwargs: Any,
    ):
        self.modality = modality
        self.dtype = dtype
        self.options = options or VLLMAudioOptions()
        self.work_dir = work_dir
        self.weight_sync_mode: str | None = None  # "colocate", "nccl" or "reload", set by _init_vllm
        self.last_sync_seconds: float | None = None
        self.syncs = 0
        self._clips: list | None = None
        self._logit_bias = suppression_bias(modality)
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------------------------

    def _model_dir(self) -> str:
        """The directory vLLM loads: the policy's own checkpoint when vLLM can load it, else a saved copy."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        path = getattr(base, "name_or_path", None) or getattr(base.config, "_name_or_path", None)
        if path and os.path.isdir(path) and is_vllm_loadable(path):
            return path
        target = os.path.join(self.work_dir, "vllm-policy")
        logger.info(
            "vLLM cannot load the policy from %r (in-memory model or thinker-only checkpoint): saving a vLLM "
            "checkpoint to %s",
            path,
            target,
        )
        if self.accelerator.is_main_process:
            save_vllm_checkpoint(base, self.processing_class, target)
        self.accelerator.wait_for_everyone()
        return target

    def _init_vllm(self) -> None:
        if self.mode == "colocate":
            if _on_cpu_platform():
                applied = apply_cpu_env_defaults()
                if applied:
                    logger.info("vLLM CPU engine: using %s (set them to override)", applied)
            overrides = {
                "model": self._model_dir(),
                "limit_mm_per_prompt": limit_mm_per_prompt(self.modality),
                **({"dtype": self.dtype} if self.dtype else {}),
                **(self.options.vllm_llm_kwargs or {}),
            }
            with _llm_overrides(overrides):
                super()._init_vllm()
            self.weight_sync_mode = "colocate"
            logger.info(
                "vLLM colocate engine on %s (dtype %s); weights sync through reload_weights",
                overrides["model"],
                overrides.get("dtype", "auto"),
            )
            return
        if self.mode != "server":
            return super()._init_vllm()
        self.weight_sync_mode = self._choose_server_sync()
        if self.weight_sync_mode == "nccl":
            super()._init_vllm()  # TRL's client + NCCL communicator
        elif self.accelerator.is_main_process:
            from trl.generation.vllm_client import VLLMClient

            base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
            self.vllm_client = VLLMClient(
                base_url=base_url, group_port=self.group_port, connection_timeout=self.server_timeout
            )
        self.accelerator.wait_for_everyone()
        logger.info(
            "vLLM server mode: weight sync through %s%s",
            self.weight_sync_mode,
            f" (files in {self.sync_dir}, which the server must see at the same path)"
            if self.weight_sync_mode == "reload"
            else "",
        )

    def _choose_server_sync(self) -> str:
        requested = self.options.vllm_weight_sync
        cuda = self.accelerator.device.type == "cuda"
        if requested == "nccl" and not cuda:
            raise ValueError(
                f"vllm_weight_sync='nccl' needs the trainer on a CUDA device (vLLM's NCCL weight transfer), the "
                f"trainer is on {self.accelerator.device}. Use vllm_weight_sync='reload' (or 'auto')."
            )
        if requested != "auto":
            return requested
        return "nccl" if cuda else "reload"

    @property
    def sync_dir(self) -> str:
        return self.options.vllm_sync_dir or os.path.join(self.work_dir, "vllm-sync")

    # ------------------------------------------------------------------------------------------------------------
    # Weight sync
    # ------------------------------------------------------------------------------------------------------------

    def _iter_named_params(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The policy's parameters, gathered, under the checkpoint names vLLM loads; with PEFT, merged.

        The checkpoint conversion needs the whole state dict at once (fused MoE experts are split), so the tensors
        are collected first. With a PEFT model the weights are ``W + ΔW`` computed out of place by
        :func:`mapo.trainer.lora.merged_weights`, not TRL's in-place ``merge_adapter`` / ``unmerge_adapter``: that
        round trip rounds the frozen base weights on every sync (in bf16 it drifts, notably the fused experts).
        """
        if is_peft_model(self.model):
            collected = self._merged_peft_params()
        else:
            collected = [(n, t.detach()) for n, t in super()._iter_named_params()]
        yield from to_vllm_names(self.model, collected)

    def _merged_peft_params(self) -> list[tuple[str, torch.Tensor]]:
        from ..lora import merged_weights

        model = self.model
        if self._dist.is_fsdp:
            # FSDP shards the LoRA factors and the base weights; TRL's FSDP walk is the one that gathers them
            if not getattr(self, "_warned_fsdp_merge", False):
                logger.warning(
                    "PEFT under FSDP: the weights for vLLM are merged by TRL in place (merge_adapter/unmerge_adapter"
                    "), which rounds the frozen base weights on every sync in bf16; mapo's out-of-place merge "
                    "(mapo.trainer.lora.merged_weights) runs without FSDP or with DeepSpeed"
                )
                self._warned_fsdp_merge = True
            return [(n, t.detach().clone()) for n, t in super()._iter_named_params()]
        active = getattr(model, "active_adapter", "default")
        to_save = re.compile(rf"\.modules_to_save\.{re.escape(str(active))}(?=\.)")
        zero3 = self._dist.is_zero3
        collected = []
        # ZeRO-3: every process gathers the whole model (collective), as TRL does before merging
        with self._dist.gather_params(list(model.parameters())):
            for name, tensor in merged_weights(model):
                if ".original_module." in name or ".modules_to_save." in name and not to_save.search(name):
                    continue  # modules_to_save: vLLM gets the trained copy, under the module's own name
                name = self._fix_param_name_to_vllm(to_save.sub("", name))
                # ZeRO-3 re-partitions the gathered parameters on exit: keep copies of the unmerged ones
                collected.append((name, tensor.clone() if zero3 else tensor))
        return collected

    def sync_weights(self) -> None:
        """Push the policy's weights to vLLM, then drop every cache computed with the old ones."""
        start = time.perf_counter()
        if self.weight_sync_mode == "nccl":
            super().sync_weights()  # TRL: stream over NCCL (now with vLLM names), reset the prefix cache
            if self.accelerator.is_main_process:
                _post_ok(self.vllm_client, "/reset_encoder_cache")
        elif self.weight_sync_mode == "reload":
            named = list(self._iter_named_params())  # every process takes part in the gathers
            if self.accelerator.is_main_process:
                save_vllm_weights(named, self.sync_dir)
                client = self.vllm_client
                _post_ok(
                    client,
                    "/collective_rpc",
                    {
                        "method": "reload_weights",
                        "kwargs": {"weights_path": self.sync_dir, "is_checkpoint_format": True},
                    },
                )
                _post_ok(client, "/reset_encoder_cache")
                client.reset_prefix_cache()
            self.accelerator.wait_for_everyone()
        else:
            self._sync_colocate()
        self.last_sync_seconds = time.perf_counter() - start
        self.syncs += 1
        logger.debug(
            "vLLM weight sync %d (%s) took %.3f s", self.syncs, self.weight_sync_mode, self.last_sync_seconds
        )

    def _sync_colocate(self) -> None:
        if self.modality.family == "qwen3_omni_moe_thinker" and _on_cpu_platform():
            raise NotImplementedError(
                "vLLM's CPU engine cannot update Qwen3-Omni's MoE expert weights in a running engine (measured on "
                "vLLM 0.30); on CPU this family can generate with vLLM but not train with it. Use a GPU, or "
                "use_vllm=False."
            )
        if self.enable_sleep_mode:
            trl_vllm_generation.empty_cache()
            self.llm.wake_up(tags=["weights"])
            self._llm_weights_sleeping = False
        named = list(self._iter_named_params())
        # Layerwise reload re-runs the kernels' weight processing, so it works where vLLM packs the linear weights
        # (CPU) as well as on GPU; TRL's per-tensor load_weights silently keeps the packed copies on CPU.
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": named, "is_checkpoint_format": True}
        )
        self.reset_caches()

    def reset_caches(self) -> None:
        """Drop cached audio embeddings (keyed by the clip's hash, not the weights) and cached prefixes."""
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    # ------------------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def audio_clips(self, clips: list) -> Iterator[None]:
        """Make ``clips`` (one per prompt, same order) the audio of the ``generate`` calls inside the block."""
        previous, self._clips = self._clips, clips
        try:
            yield
        finally:
            self._clips = previous

    def _generation_kwargs(self) -> dict[str, Any]:
        extra = dict(self.generation_kwargs)
        bias = dict(self._logit_bias)
        bias.update({int(k): float(v) for k, v in (extra.pop("logit_bias", None) or {}).items()})
        extra["logit_bias"] = bias
        return extra

    def generate(self, prompts, images, num_generations, profiler=None):
        if self._clips is None:
            return super().generate(prompts, images, num_generations, profiler)
        if images is not None and any(i is not None for i in images):
            raise NotImplementedError(
                "prompts with both images and audio are not supported with vLLM rollouts"
            )
        if len(self._clips) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(self._clips)} audio clips were handed over")
        profiler = profiler or contextlib.nullcontext()
        if self.mode == "server":
            return self._generate_server(prompts, list(self._clips), num_generations, profiler)
        return self._generate_colocate(prompts, list(self._clips), profiler)

    def _sampling_params(self):
        from vllm import SamplingParams

        kwargs = {
            "n": 1,
            "repetition_penalty": self.repetition_penalty,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": 0.0 if self.min_p is None else self.min_p,
            "max_tokens": self.max_completion_length,
            "logprobs": self.logprobs,
        }
        kwargs.update(self._generation_kwargs())
        if self.structured_outputs_regex is not None:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(regex=self.structured_outputs_regex)
        return SamplingParams(**kwargs)

    def _generate_colocate(self, prompts, clips, profiler):
        tp = self.tensor_parallel_size
        if tp > 1:  # every rank of a TP group generates the group's prompts, as in TRL
            gathered = [None] * tp
            torch.distributed.all_gather_object(
                gathered, list(zip(prompts, clips, strict=True)), group=self.tp_group
            )
            pairs = [p for group in gathered for p in group]
            all_prompts, all_clips = [p for p, _ in pairs], [c for _, c in pairs]
        else:
            all_prompts, all_clips = prompts, clips
        requests = build_requests(all_prompts, all_clips, self.modality)
        if self.enable_sleep_mode:
            self.llm.wake_up(tags=["kv_cache"])
        with profiler:
            outputs = self.llm.generate(requests, sampling_params=self._sampling_params(), use_tqdm=False)
        prompt_ids = [list(o.prompt_token_ids) for o in outputs]
        check_prompt_ids(all_prompts, prompt_ids)
        completion_ids = [list(c.token_ids) for o in outputs for c in o.outputs]
        logprobs, logprob_token_ids = extract_logprobs(outputs)
        if tp > 1:
            rank = torch.distributed.get_rank(group=self.tp_group)
            sl = slice(rank * len(prompts), (rank + 1) * len(prompts))
            prompt_ids, completion_ids = prompt_ids[sl], completion_ids[sl]
            logprobs = logprobs[sl] if logprobs is not None else None
            logprob_token_ids = logprob_token_ids[sl] if logprob_token_ids is not None else None
        if self.enable_sleep_mode:
            self.llm.sleep(level=2)
            self._llm_weights_sleeping = True
        return prompt_ids, completion_ids, logprobs, logprob_token_ids

    def audio_features(self, clips: list) -> list[dict]:
        """The server's processed audio for each clip (``/v1/chat/completions/render``), ready to pair with ids."""
        client = self.vllm_client
        out = []
        for clip in clips:
            wave = clip_for_processor(clip, self.modality)
            message = {
                "role": "user",
                "content": [
                    {
                        "type": "input_audio",
                        "input_audio": {
                            "data": wav_base64(wave, self.modality.sampling_rate),
                            "format": "wav",
                        },
                    }
                ],
            }
            response = client.session.post(
                f"{client.base_url}/v1/chat/completions/render",
                json={"model": client.model, "messages": [message], "max_tokens": 1},
            )
            if response.status_code == 404:
                raise RuntimeError(
                    f"The vLLM server at {client.base_url} does not serve /v1/chat/completions/render; start it "
                    "with `mapo vllm-serve` (it adds --enable-scale-out)."
                )
            if response.status_code != 200:
                raise RuntimeError(f"render request failed: {response.status_code}, {response.text}")
            out.append(response.json()["features"])
        return out

    def _place_audio(self, features: dict, prompt_ids: list[int]) -> dict:
        runs = placeholder_runs(prompt_ids, self.modality.audio_token_id)
        rendered = features["mm_placeholders"].get("audio", [])
        if len(runs) != 1 or len(rendered) != 1:
            raise ValueError(
                f"a prompt has {len(runs)} runs of the audio placeholder and the server processed "
                f"{len(rendered)} clips; one of each is needed"
            )
        if runs[0]["length"] != rendered[0]["length"]:
            raise RuntimeError(
                f"the server's processor makes {rendered[0]['length']} audio placeholders for this clip, the "
                f"trainer's processor {runs[0]['length']}: their feature-extractor settings differ (e.g. 3000 vs "
                "3001 mel frames). Serve the same checkpoint directory the trainer loads."
            )
        return {**features, "mm_placeholders": {**features["mm_placeholders"], "audio": runs}}

    def _generate_server(self, prompts, clips, num_generations, profiler):
        accelerator = self.accelerator
        all_prompts = gather_object(prompts)
        all_clips = gather_object(clips)
        if accelerator.is_main_process:
            unique_prompts = all_prompts[::num_generations]
            features = self.audio_features(all_clips[::num_generations])
            features = [self._place_audio(f, ids) for f, ids in zip(features, unique_prompts, strict=True)]
            with profiler:
                output = self.vllm_client.generate(
                    prompts=unique_prompts,
                    features=features,
                    n=num_generations,
                    repetition_penalty=self.repetition_penalty,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    top_k=self.top_k,
                    min_p=0.0 if self.min_p is None else self.min_p,
                    max_tokens=self.max_completion_length,
                    logprobs=self.logprobs,
                    structured_outputs_regex=self.structured_outputs_regex,
                    generation_kwargs=self._generation_kwargs(),
                )
            check_prompt_ids(unique_prompts, output["prompt_ids"])  # the server echoes what it generated from
            payload = (
                output["prompt_ids"],
                output["completion_ids"],
                output["logprobs"],
                output.get("logprob_token_ids"),
            )
        else:
            payload = None
        box = [payload]
        broadcast_object_list(box, from_process=0)
        all_prompt_ids, all_completion_ids, all_logprobs, all_logprob_token_ids = box[0]
        all_prompt_ids = [ids for ids in all_prompt_ids for _ in range(num_generations)]
        sl = slice(accelerator.process_index * len(prompts), (accelerator.process_index + 1) * len(prompts))
        return (
            all_prompt_ids[sl],
            all_completion_ids[sl],
            all_logprobs[sl] if all_logprobs is not None else None,
            all_logprob_token_ids[sl] if all_logprob_token_ids is not None else None,
        )


def _post_ok(client, route: str, payload: dict | None = None) -> None:
    """POST to a dev-mode route of the server (some answer 200 with an empty body)."""
    response = client.session.post(f"{client.base_url}{route}", json=payload)
    if response.status_code == 404:
        raise RuntimeError(
            f"The vLLM server at {client.base_url} does not serve {route}: start it with `mapo vllm-serve` "
            "(it sets VLLM_SERVER_DEV_MODE=1)."
        )
    if response.status_code != 200:
        raise RuntimeError(f"POST {route} failed: {response.status_code}, {response.text}")


@contextlib.contextmanager
def _llm_overrides(overrides: dict[str, Any]) -> Iterator[None]:
    """Let TRL build its ``vllm.LLM`` (environment, TP groups, seeds, logprobs mode) with our model directory and
    multimodal limits: TRL 1.16 has no passthrough for them."""
    original = trl_vllm_generation.LLM

    def build(*args: Any, **kwargs: Any):
        kwargs.update(overrides)
        return original(*args, **kwargs)

    trl_vllm_generation.LLM = build
    try:
        yield
    finally:
        trl_vllm_generation.LLM = original


__all__ = [
    "AudioVLLMGeneration",
    "VLLMAudioOptions",
    "WEIGHT_SYNC_MODES",
    "apply_cpu_env_defaults",
    "audio_clips_of",
    "limit_mm_per_prompt",
    "wav_base64",
]
