"""``AudioGRPOTrainer``: TRL's ``GRPOTrainer`` with the audio carried through every forward.

TRL 1.16 passes the processor's audio features to ``generate()`` but drops them in every scoring forward (old,
reference and training log-probs), so a plain run trains on the placeholder embeddings without any error; and its
``__init__`` crashes for configs without ``image_token_id`` (Qwen2-Audio). This layer fixes both with thin
overrides and is the GRPO baseline of the paper. It knows nothing about MAPO.

Override points (their order inside TRL and what TRL reads after each: :data:`mapo.trainer.protocol.TRL_PROTOCOL`,
checked by ``tests/trainer/test_trl_contract.py``):

* ``_tokenize_prompts``: keep the audio features the processor produced for the generation batch.
* ``_generate_and_score_completions``: make them visible to TRL's scoring forwards, then add them to the batch dict
  so they survive TRL's shuffle/split into micro-batches.
* ``_compute_loss``: make the micro-batch's audio visible to the training forward.
* ``_get_per_token_logps_and_entropies``: when audio is visible, pass it (row-sliced per chunk) to the model.
* ``_calculate_rewards``: keep this process's per-function rewards (``self._local_rewards_per_func``); log
  ``rewards/<name>/nan_frac`` and apply ``reward_nan_policy`` to missing rewards (:mod:`mapo.rewards.missing`).
* the audio canary (:mod:`mapo.trainer.audio_canary`) runs at the first training generation batch.
* ``train``: ``resume_from_checkpoint="latest"`` skips incomplete checkpoints (:mod:`mapo.trainer.checkpoints`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import add_fused_lm_head

from ..data import AudioPromptTransform, count_audio_parts
from ..modality import ModalitySpec, load_policy_model, resolve_modality, with_feature_kwargs
from .audio_canary import AudioCanary
from .checkpoints import checkpoint_step, resolve_resume
from .config_checks import check_reward_funcs
from .lora import check_lora
from .missing_rewards import handle_missing_rewards
from .rollout import VLLMAudioRollouts

logger = logging.getLogger(__name__)


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


class _ModelWithAudio:
    """Callable proxy that adds fixed audio kwargs to every call of ``model`` (TRL only calls the model)."""

    def __init__(self, model: torch.nn.Module, audio: dict[str, torch.Tensor]):
        self.model = model
        self.audio = audio

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs, **self.audio)


class AudioGRPOTrainer(VLLMAudioRollouts, GRPOTrainer):
    """GRPO for audio language models (Qwen2-Audio, Qwen2.5-Omni / Qwen3-Omni thinkers, ...).

    Same arguments as ``trl.GRPOTrainer``. Additionally:

    * ``model`` may be a path: it is loaded with :func:`mapo.modality.load_policy_model`, which picks
      the thinker class for Omni checkpoints.
    * ``train_dataset`` rows with an ``audio`` column (path, array or ``datasets.Audio``) and a ``question`` are
      turned into conversational prompts with one audio part by a lazy transform
      (:class:`mapo.data.AudioPromptTransform`); rows with a ``prompt`` are normalised. Exactly one clip per prompt.
    * ``use_vllm=True`` generates the rollouts with vLLM, with the audio, in colocate or server mode
      (:class:`mapo.trainer.rollout.VLLMAudioRollouts`, docs/vllm.md).
    """

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: GRPOConfig | None = None,
        train_dataset=None,
        *a,
        modality: ModalitySpec | None = None,
        **kw,
    ):
        if args is None:
            raise ValueError(
                "args: pass a GRPOConfig (or MAPOConfig); the audio trainers have no implicit config"
            )
        check_reward_funcs(reward_funcs)  # before a path is loaded: an unconfigured judge is a set-up error
        if isinstance(model, str):
            model = load_policy_model(model, args)
        if not isinstance(model, PreTrainedModel) and not hasattr(model, "peft_config"):
            raise TypeError(
                f"model must be a path or a transformers PreTrainedModel, got {type(model).__name__}"
            )
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        processing_class = kw.get("processing_class")
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        self.modality = with_feature_kwargs(
            modality if modality is not None else resolve_modality(base, tokenizer=tokenizer), base
        )
        self._pending_audio: dict[str, torch.Tensor] | None = None
        self._visible_audio: dict[str, torch.Tensor] | None = None
        self._local_rewards_per_func: torch.Tensor | None = None
        self._audio_canary = AudioCanary.from_args(args)
        peft_config = kw.get("peft_config")
        check_lora(model, peft_config)  # LoRA must reach what it names, fused MoE experts included
        # TRL reloads its KL reference from `config._name_or_path` with `config.architectures[0]`: that fails for an
        # in-memory model and loads the wrong class for an Omni thinker. Build it here instead (same memory).
        own_reference = None
        if args.beta != 0.0 and peft_config is None and not _is_peft(model) and not args.sync_ref_model:
            own_reference = self._load_or_copy_reference(model, args)
        model = self._prepare_model_before_grpo_init(model, args, peft_config)

        sr = getattr(
            getattr(processing_class, "feature_extractor", None), "sampling_rate", self.modality.sampling_rate
        )
        if train_dataset is not None:
            train_dataset = self._with_audio_prompts(train_dataset, sr)
        if kw.get("eval_dataset") is not None:
            kw["eval_dataset"] = self._with_audio_prompts(kw["eval_dataset"], sr)

        # TRL reads config.image_token_id to suppress it during generation and crashes when the config has none
        # (Qwen2-Audio). Lend it the audio placeholder id for the duration of __init__; generating an audio
        # placeholder must be suppressed anyway (it would break the next scoring forward).
        config = base.config
        lent = getattr(config, "image_token_id", None) is None
        if lent:
            config.image_token_id = self.modality.audio_token_id
        beta, init_kwargs = args.beta, args.model_init_kwargs
        if own_reference is not None:
            args.beta = 0.0  # TRL then builds no reference; ours is attached below
        args.model_init_kwargs = None  # the models are loaded already (TRL would warn that they are ignored)
        try:
            super().__init__(model, reward_funcs, args, train_dataset, *a, **kw)
        finally:
            args.beta, args.model_init_kwargs = beta, init_kwargs
            if lent:
                del config.image_token_id
        if own_reference is not None:
            self.beta = beta
            self.ref_model = self._prepare_frozen(own_reference)
        if modality is None and processing_class is None:  # TRL loaded the processor: markers are known now
            self.modality = with_feature_kwargs(resolve_modality(base, tokenizer=self._tokenizer), base)
        if hasattr(self, "generation_kwargs"):
            suppress = {self.modality.audio_token_id}
            for tid in (self.modality.audio_start_token_id, self.modality.audio_end_token_id):
                if tid is not None:
                    suppress.add(tid)
            image_id = getattr(config, "image_token_id", None)
            if image_id is not None:
                suppress.add(image_id)
            self.generation_kwargs["suppress_tokens"] = sorted(suppress)
            self.generation_config.suppress_tokens = sorted(suppress)

    # ------------------------------------------------------------------------------------------------------------
    # Hooks for subclasses
    # ------------------------------------------------------------------------------------------------------------

    def _prepare_model_before_grpo_init(self, model, args, peft_config):
        """Called with the loaded model before ``GRPOTrainer.__init__`` patches and wraps it."""
        return model

    @staticmethod
    def _load_or_copy_reference(model, args):
        """A frozen copy of the initial policy: reloaded from its path when it has one, else deep-copied.

        Called before TRL patches the policy's forward (a patched forward closes over the original model).
        """
        path = getattr(model.config, "_name_or_path", "") or ""
        if path and os.path.isdir(path):
            return load_policy_model(path, args, dtype=model.dtype)
        return copy.deepcopy(model)

    def _prepare_frozen(self, model):
        """Freeze a reference model, give it TRL's fused LM head (log-probs + entropy) and wrap it like TRL does."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if self.args.cast_lm_head_to_fp32:
            model.get_output_embeddings().float()
        add_fused_lm_head(
            model,
            temperature=self.temperature,
            cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
            outputs=("log_probs", "entropy"),
        )
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(model, self.accelerator)
        return self.accelerator.prepare_model(model.to(self.accelerator.device), evaluation_mode=True)

    @staticmethod
    def _with_audio_prompts(dataset, sampling_rate: int):
        """Attach the audio-prompt transform unless the dataset already yields usable prompts."""
        if hasattr(dataset, "with_transform") and getattr(dataset, "format", {}).get("type") != "custom":
            return dataset.with_transform(AudioPromptTransform(sampling_rate=sampling_rate))
        return dataset

    # ------------------------------------------------------------------------------------------------------------
    # Audio plumbing
    # ------------------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def audio_visible(self, audio: dict[str, torch.Tensor] | None) -> Iterator[None]:
        """Make ``audio`` (rows aligned with the batch) the audio of every scoring forward inside the block."""
        previous, self._visible_audio = self._visible_audio, audio
        try:
            yield
        finally:
            self._visible_audio = previous

    def _tokenize_prompts(self, prompts: list):
        for i, prompt in enumerate(prompts):
            n_audio = count_audio_parts(prompt) if isinstance(prompt, list) else 0
            if n_audio != 1:
                raise ValueError(
                    f"prompt {i} has {n_audio} audio parts; the audio trainers need exactly one audio clip per "
                    "prompt (a row without audio cannot be trained with an audio objective)"
                )
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        audio = {}
        for key in self.modality.audio_feature_kwargs:
            if key in multimodal_fields:
                value = multimodal_fields[key]
                audio[key] = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if unused := sorted(set(multimodal_fields) - set(audio)):
            # generate() sees them but the scoring forwards would not: the log-probs would not be the sampler's.
            raise ValueError(
                f"the processor returned {unused}, which the {self.modality.family} ModalitySpec does not list in "
                f"audio_feature_kwargs {self.modality.audio_feature_kwargs}; the scoring forwards would drop them. "
                "Pass modality=ModalitySpec(..., audio_feature_kwargs=(...)) naming every audio input."
            )
        if "input_features" not in audio:
            raise ValueError(
                "The processor returned no audio features for prompts with audio parts "
                f"(got {sorted(multimodal_fields)}). Pass the model's processor as processing_class."
            )
        if audio["input_features"].shape[0] != len(prompts):
            raise ValueError(
                f"The processor returned {audio['input_features'].shape[0]} audio feature rows for {len(prompts)} "
                "prompts; exactly one audio clip per prompt is supported."
            )
        self._pending_audio = audio
        return prompt_ids, images, multimodal_fields

    def _generate_and_score_completions(self, inputs):
        self._pending_audio = None
        device = self.accelerator.device
        # The audio exists only once _tokenize_prompts ran inside super(), so the scoring forwards read it lazily.
        with self._audio_from_pending():
            output = super()._generate_and_score_completions(inputs)
        if self._pending_audio is None:
            raise RuntimeError("no audio features were produced for this generation batch")
        for key, value in self._pending_audio.items():
            output[key] = value.to(device)
        self._pending_audio = None
        if (
            self._audio_canary is not None
        ):  # once, at the first training batch: does the audio reach the decoder?
            self._audio_canary(self, inputs, output, self.modality.audio_feature_kwargs)
        return output

    @contextlib.contextmanager
    def _audio_from_pending(self) -> Iterator[None]:
        previous = self._visible_audio
        self._visible_audio = _PENDING
        try:
            yield
        finally:
            self._visible_audio = previous

    def _current_audio(self) -> dict[str, torch.Tensor] | None:
        if self._visible_audio is _PENDING:
            return self._pending_audio
        return self._visible_audio

    def _compute_loss(self, model, inputs):
        audio = {k: inputs[k] for k in self.modality.audio_feature_kwargs if k in inputs}
        with self.audio_visible(audio or None):
            return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **kwargs,
    ):
        audio = self._current_audio()
        if not audio:
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                **kwargs,
            )
        if any(v is not None for v in kwargs.values() if not isinstance(v, list) or v):
            raise NotImplementedError(
                "prompts with both images and audio are not supported by AudioGRPOTrainer"
            )
        n = input_ids.size(0)
        for key, value in audio.items():
            if value.size(0) != n:
                raise ValueError(
                    f"audio feature {key!r} has {value.size(0)} rows for a batch of {n} sequences"
                )
        device = input_ids.device
        chunk = batch_size or n
        logps, entropies, aux = [], [], []
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            proxy = _ModelWithAudio(model, {k: v[start:end].to(device) for k, v in audio.items()})
            lp, ent, ax = super()._get_per_token_logps_and_entropies(
                proxy,
                input_ids[start:end],
                attention_mask[start:end],
                logits_to_keep,
                None,
                compute_entropy,
                compute_aux_loss,
            )
            logps.append(lp)
            entropies.append(ent)
            aux.append(ax)
        return (
            torch.cat(logps, 0),
            torch.cat(entropies, 0) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None,
        )

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` / ``"latest"`` takes the newest *complete* checkpoint
        (:func:`mapo.trainer.checkpoints.latest_checkpoint` skips half-written ones with a warning)."""
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        if resume is not None:
            logger.info("resuming from %s (step %d)", resume, checkpoint_step(resume))
        return super().train(resume, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume the weights through ``from_pretrained``.

        ``save_pretrained`` writes audio LMs in their original checkpoint layout (e.g. Qwen2-Audio's
        ``language_model.model.*``) and only ``from_pretrained`` maps it back; transformers' ``Trainer`` loads the
        file with a bare ``load_state_dict`` and, with a warning only, leaves every weight at its current value.
        """
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        has_full_weights = any(
            os.path.isfile(os.path.join(resume_from_checkpoint, name))
            for name in ("model.safetensors", "model.safetensors.index.json")
        )
        if _is_peft(target) or self.is_fsdp_enabled or self.is_deepspeed_enabled or not has_full_weights:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(target).from_pretrained(resume_from_checkpoint, config=target.config, dtype=target.dtype)
        target.load_state_dict(saved.state_dict(), strict=True)
        logger.info("resumed weights from %s", resume_from_checkpoint)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        n = len(prompts)
        start = self.accelerator.process_index * n
        # raw values (NaN = missing): MAPO's failure gate counts a missing accuracy as failed
        self._local_rewards_per_func = rewards_per_func[start : start + n].detach().clone()
        mode = "train" if self.model.training else "eval"
        return handle_missing_rewards(self, rewards_per_func, mode)  # instead of TRL's implicit 0 (nansum)


_PENDING = object()
