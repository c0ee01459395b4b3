"""``MAPOTrainer``: MAPO (paper §3, Algorithm 1) on top of :class:`AudioGRPOTrainer`, by thin overrides only.

Per generation batch (``_generate_and_score_completions``, after TRL has generated, scored and normalised):
the text-only reference entropies H(π_text-ref(·|y_<t, x_text)) — the same completion scored by π_text-ref with the
audio removed from the prompt (:func:`mapo.modality.text_only_prompt`) — and, for the attention branch, the POS gate
and the failure flags from the raw accuracy reward. They travel in TRL's batch dict.

Per micro-batch (``_compute_loss``), TRL's own loss runs unchanged, with two hooks:

1. its training forward already computes the live policy's entropies; right after it (in
   ``_get_per_token_logps_and_entropies``) Δh = H_text − H_policy (§3.3) gives ω̃ (eq. 1), folded into the
   advantages as a ``(B, T)`` tensor renormalised so Σ_t w_t = T, which makes TRL's ``loss_type="grpo"``
   aggregation exactly eq. 2 (:func:`mapo.objective.fold_weights_into_advantages`), and the detached coefficients
   of eq. 4 (ν̃, temporal weight, clipped prefactor, 1/N_pos). This uses the live policy entropy, as the paper and
   the public code do, and costs no extra forward.
2. the forward runs inside an audio-attention capture (:func:`mapo.probe.audio_attention`), and η·L_attn is added
   to TRL's loss.

TRL's loss body is never copied; ``tests/trainer/test_trl_contract.py`` pins the TRL facts these hooks rely on.
"""

from __future__ import annotations

import logging

import torch
from trl.trainer.utils import add_fused_lm_head, use_adapter

from .. import objective
from ..modality import audio_key_mask, load_policy_model, text_only_prompt
from ..pos_gate import pos_gate_batch
from ..probe import audio_attention, enable_probe_attention, resolve_target_layers
from .audio_grpo import AudioGRPOTrainer, _is_peft
from .config import MAPOConfig

logger = logging.getLogger(__name__)

# Keys MAPOTrainer adds to TRL's batch dict ([B] or [B, T] tensors, so they survive TRL's shuffle/split).
TEXT_ENTROPY_KEY = "mapo_text_entropy"  # H(π_text-ref) per completion token, generation time
SEQ_ADVANTAGES_KEY = "mapo_seq_advantages"  # Â per sequence, before ω̃ is folded in
POS_GATE_KEY = "mapo_pos_gate"  # g^pos per completion token
FAILED_KEY = "mapo_failed"  # 1[r_acc ≤ θ_fail] per sequence
DELTA_H_KEY = "mapo_delta_h"  # Δh per completion token, written at loss time (live policy entropy)
ATTN_COEF_KEY = "mapo_attn_coef"  # detached coefficients of eq. 4, written at loss time


class MAPOTrainer(AudioGRPOTrainer):
    """Modality-Aware Policy Optimization. Same arguments as ``trl.GRPOTrainer``, with a :class:`MAPOConfig`.

    The text-only reference π_text-ref (``args.text_reference``): with LoRA, the policy with its adapters disabled;
    with full fine-tuning, TRL's frozen KL reference when β > 0, otherwise a frozen copy of the initial policy made
    here (or ``args.text_reference_model``); ``"policy"`` uses the live policy without audio.
    """

    args: MAPOConfig

    def __init__(
        self, model, reward_funcs=None, args: MAPOConfig | None = None, train_dataset=None, *a, **kw
    ):
        if not isinstance(args, MAPOConfig):
            raise TypeError(f"args must be a MAPOConfig, got {type(args).__name__}")
        self._own_text_ref = None
        self._loss_inputs = None
        super().__init__(model, reward_funcs, args, train_dataset, *a, **kw)
        if (
            args.target_layers is not None
        ):  # refused now, not at the first loss: repeated or beyond the decoder
            decoder = self.modality.decoder(self.accelerator.unwrap_model(self.model))
            resolve_target_layers(args.target_layers, decoder.num_layers)
        if args.attention_branch_on:
            ckpt_kwargs = args.gradient_checkpointing_kwargs or {}
            if args.gradient_checkpointing and ckpt_kwargs.get("use_reentrant"):
                raise ValueError(
                    "The attention branch (eta > 0) needs the audio attention mass to keep its autograd graph, which "
                    "reentrant gradient checkpointing discards. TRL forces use_reentrant=True for PEFT + DeepSpeed "
                    "ZeRO-3. Use ZeRO-2 or full fine-tuning with ZeRO-3, set gradient_checkpointing=False, or "
                    "eta=0 (mask-only)."
                )
            if args.accuracy_reward_name not in self.reward_func_names:
                raise ValueError(
                    f"accuracy_reward_name={args.accuracy_reward_name!r} is not one of the reward functions "
                    f"{self.reward_func_names}; the failure gate f̂ of eq. 4 needs the raw accuracy reward. Set "
                    "accuracy_reward_name to the right name (the function's __name__)."
                )
        self._text_ref = self._build_text_reference()

    # ------------------------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------------------------

    def _prepare_model_before_grpo_init(self, model, args, peft_config):
        if args.attention_branch_on:
            enable_probe_attention(model.get_base_model() if _is_peft(model) else model, self.modality)
        needs_copy = (
            args.text_reference == "frozen"
            and args.text_reference_model is None
            and peft_config is None
            and not _is_peft(model)
            and args.beta == 0.0  # with β > 0 the KL reference is the same frozen model: reuse it
        )
        if needs_copy:
            self._own_text_ref = self._load_or_copy_reference(model, args)
        return model

    def _build_text_reference(self):
        """Resolve π_text-ref (see class docstring). Returns a model, or None for 'the policy (maybe adapter-off)'."""
        args = self.args
        if args.text_reference == "policy":
            return None
        if args.text_reference_model is not None:
            ref = load_policy_model(args.text_reference_model, args, dtype=self.model.dtype)
            policy_vocab = self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
            ref_vocab = ref.config.get_text_config().vocab_size
            if ref_vocab != policy_vocab:
                raise ValueError(
                    f"text_reference_model has vocabulary size {ref_vocab}, the policy {policy_vocab}: Δh compares "
                    "next-token distributions, so both must share the tokenizer"
                )
            return self._prepare_frozen(ref)
        if _is_peft(self.accelerator.unwrap_model(self.model)):
            return None  # adapters disabled at scoring time
        if self.ref_model is not None:
            # TRL's own reference (sync_ref_model) carries log-probs only; Δh needs its entropies too.
            add_fused_lm_head(
                self.accelerator.unwrap_model(self.ref_model),
                temperature=self.temperature,
                cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
                outputs=("log_probs", "entropy"),
            )
            return self.ref_model
        if self._own_text_ref is None:
            raise RuntimeError("internal: no frozen copy of the policy was made for the text reference")
        ref, self._own_text_ref = self._own_text_ref, None
        return self._prepare_frozen(ref)

    # ------------------------------------------------------------------------------------------------------------
    # Generation-batch signals
    # ------------------------------------------------------------------------------------------------------------

    def _text_reference_entropies(self, prompt_ids, prompt_mask, completion_ids, completion_mask, batch_size):
        """H(π_text-ref(·|y_<t, x_text)) for every completion token, ``[B, T]`` fp32 (§3.3)."""
        text_ids, text_mask = text_only_prompt(
            prompt_ids,
            prompt_mask,
            self.modality,
            pad_token_id=self._tokenizer.pad_token_id,
            text_only_mode=self.args.text_only_mode,
        )
        ids = torch.cat([text_ids, completion_ids], dim=1)
        mask = torch.cat([text_mask, completion_mask], dim=1)
        keep = completion_ids.size(1)
        with torch.no_grad(), self.audio_visible(None):
            if self._text_ref is not None:
                _, ent, _ = self._get_per_token_logps_and_entropies(
                    self._text_ref, ids, mask, keep, batch_size=batch_size, compute_entropy=True
                )
            elif self.args.text_reference == "policy":
                _, ent, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, mask, keep, batch_size=batch_size, compute_entropy=True
                )
            else:  # LoRA: the frozen base is the policy with its adapters disabled
                unwrapped = self.accelerator.unwrap_model(self.model)
                name = "ref" if "ref" in unwrapped.peft_config else None
                with use_adapter(unwrapped, adapter_name=name):
                    _, ent, _ = self._get_per_token_logps_and_entropies(
                        self.model, ids, mask, keep, batch_size=batch_size, compute_entropy=True
                    )
        return ent.float()

    def _failed(self, n: int, device) -> torch.Tensor:
        """1[r_acc ≤ θ_fail] per local sample; a missing (None/NaN) accuracy counts as failed."""
        idx = self.reward_func_names.index(self.args.accuracy_reward_name)
        acc = self._local_rewards_per_func[:, idx].to(device)
        if acc.numel() != n:
            raise RuntimeError(f"internal: {acc.numel()} accuracy rewards for {n} local samples")
        return torch.isnan(acc) | (acc <= self.args.fail_threshold)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        cfg = self.args
        if not (cfg.use_relevance_mask or cfg.attention_branch_on):
            return output  # plain GRPO (both MAPO branches ablated)
        mask = output["completion_mask"].float()
        if "tool_mask" in output:
            mask = mask * output["tool_mask"].float()
        batch_size = (
            self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        )
        h_text = self._text_reference_entropies(
            output["prompt_ids"],
            output["prompt_mask"],
            output["completion_ids"],
            output["completion_mask"],
            batch_size,
        )
        # Per-sample signals travel in the batch dict (TRL shuffles and splits every [B, ...] tensor in it).
        output[TEXT_ENTROPY_KEY] = h_text
        output[SEQ_ADVANTAGES_KEY] = output["advantages"]
        self._log_masked(mode, "mapo/text_ref_entropy", h_text, mask)
        if cfg.attention_branch_on:
            ids_lists = [
                row[m.bool()].tolist()
                for row, m in zip(output["completion_ids"].cpu(), output["completion_mask"].cpu())
            ]
            gate, report = pos_gate_batch(
                ids_lists,
                self._tokenizer,
                tagger=cfg.pos_tagger,
                target_tags=cfg.pos_tags,
                pad_to=mask.size(1),
            )
            gate = gate.to(mask.device, mask.dtype) * mask
            failed = self._failed(mask.size(0), mask.device)
            output[POS_GATE_KEY] = gate
            output[FAILED_KEY] = failed
            self._log_masked(mode, "mapo/pos_gate_on_frac", gate, mask)
            self._metrics[mode][f"mapo/pos_tagger/{report.tagger}"].append(1.0)
            self._log_mean(mode, "mapo/failed_frac", failed.float())
            prefactor = objective.attention_prefactor(
                output["advantages"],
                failed,
                fail_gate_floor=cfg.fail_gate_floor,
                advantage_floor=cfg.advantage_floor,
                prefactor_clip=cfg.prefactor_clip,
            )
            self._log_mean(mode, "mapo/prefactor_mean", prefactor)
        return output

    # ------------------------------------------------------------------------------------------------------------
    # Loss
    # ------------------------------------------------------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *a, **kw):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *a, **kw
        )
        inputs, self._loss_inputs = self._loss_inputs, None
        if inputs is not None:  # the training forward of _compute_loss: its entropies are the live policy's
            if entropies is None:
                raise RuntimeError(
                    "TRL's training forward returned no entropies; Δh needs them (TRL changed?)"
                )
            self._apply_live_weights(inputs, entropies)
        return logps, entropies, aux

    def _apply_live_weights(self, inputs, h_policy: torch.Tensor) -> None:
        """Δh with the live policy's entropies, then ω̃ (eq. 1) folded into the advantages TRL reads next, and the
        attention coefficients of eq. 4. TRL's ``_compute_loss`` reads ``inputs["advantages"]`` after its forward
        (``tests/trainer/test_trl_contract.py`` checks this order)."""
        cfg = self.args
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"].float()
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"].float()
        h_policy = h_policy.detach().float()
        delta_h = (inputs[TEXT_ENTROPY_KEY] - h_policy) * mask
        advantages = inputs[
            SEQ_ADVANTAGES_KEY
        ]  # never the folded ones: a batch can be reused (num_iterations)
        inputs[DELTA_H_KEY] = delta_h
        self._log_masked(mode, "mapo/policy_entropy", h_policy, mask)
        self._log_masked(mode, "mapo/delta_h_mean", delta_h, mask)
        self._log_masked(mode, "mapo/delta_h_abs_mean", delta_h.abs(), mask)
        if cfg.use_relevance_mask:
            omega = objective.relevance_mask(delta_h, mask, tau_base=cfg.tau_base, mask_clip=cfg.mask_clip)
            inputs["advantages"] = objective.fold_weights_into_advantages(advantages, omega, mask)
            self._log_max(mode, "mapo/omega_max", omega, mask)
            self._log_masked(mode, "mapo/omega_clip_frac", (omega >= cfg.mask_clip - 1e-6).float(), mask)
        if cfg.attention_branch_on:
            inputs[ATTN_COEF_KEY] = objective.attention_coefficients(
                delta_h,
                inputs[POS_GATE_KEY],
                advantages,
                inputs[FAILED_KEY],
                mask,
                tau_base=cfg.tau_base,
                mask_clip=cfg.mask_clip,
                kappa=cfg.kappa,
                fail_gate_floor=cfg.fail_gate_floor,
                advantage_floor=cfg.advantage_floor,
                prefactor_clip=cfg.prefactor_clip,
            )

    def _compute_loss(self, model, inputs):
        cfg = self.args
        if not (cfg.use_relevance_mask or cfg.attention_branch_on):
            return super()._compute_loss(model, inputs)
        mode = "train" if self.model.training else "eval"
        self._loss_inputs = inputs
        try:
            if not cfg.attention_branch_on:
                loss = super()._compute_loss(model, inputs)
            else:
                loss, mass = self._loss_with_audio_mass(model, inputs)
        finally:
            applied, self._loss_inputs = self._loss_inputs is None, None
        if not applied:
            raise RuntimeError("TRL's _compute_loss did not run its training forward through the MAPO hook")
        if not cfg.attention_branch_on:
            return loss

        completion_mask = inputs["completion_mask"].float()
        if "tool_mask" in inputs:
            completion_mask = completion_mask * inputs["tool_mask"].float()
        l_attn = objective.attention_loss_from_coefficients(mass, inputs[ATTN_COEF_KEY], log_eps=cfg.log_eps)
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if cfg.attention_only:
            loss = 0.0 * loss  # keeps the policy graph (and DDP's view of used parameters) intact
        loss = loss + cfg.eta * l_attn / normalizer

        c = mass.size(1)
        position = (torch.arange(c, device=mass.device) + 1).float().unsqueeze(0)
        lengths = completion_mask.sum(1, keepdim=True).clamp(min=1)
        first = completion_mask * (position <= lengths / 2).float()
        self._log_masked(mode, "mapo/audio_mass_mean", mass.detach(), completion_mask)
        self._log_masked(mode, "mapo/audio_mass_first_half", mass.detach(), first)
        self._log_masked(mode, "mapo/audio_mass_second_half", mass.detach(), completion_mask - first)
        self._log_mean(mode, "mapo/attn_loss", l_attn.detach().reshape(1))
        return loss

    def _loss_with_audio_mass(self, model, inputs):
        """TRL's loss, run inside an audio-attention capture; returns it and a_t ``[B, T]`` (§3.2)."""
        cfg = self.args
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        p, c = prompt_ids.size(1), completion_ids.size(1)
        # The query predicting completion token t sits at position P-1+t (design.md §2).
        query_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        query_mask[:, p - 1 : p - 1 + c] = inputs["completion_mask"].bool()
        keys = audio_key_mask(
            input_ids, self.modality, include_markers=cfg.include_audio_markers, prompt_width=p
        )
        unwrapped = self.accelerator.unwrap_model(model)
        base = unwrapped.get_base_model() if _is_peft(unwrapped) else unwrapped
        with audio_attention(
            base,
            keys,
            query_mask=query_mask,
            target_layers=cfg.target_layers,
            head_reduce=cfg.head_reduce,
            layer_reduce=cfg.layer_reduce,
            spec=self.modality,
        ) as capture:
            loss = super()._compute_loss(model, inputs)
        return loss, capture.mass[:, p - 1 : p - 1 + c]

    # ------------------------------------------------------------------------------------------------------------
    # Metrics (reduced over processes, appended to TRL's metric store; they reach every `report_to` backend)
    # ------------------------------------------------------------------------------------------------------------

    def _log_masked(self, mode: str, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        stats = torch.stack([(values.detach().float() * mask).sum(), mask.sum().float()])
        total, count = self.accelerator.reduce(stats, reduction="sum").tolist()
        if count > 0:
            self._metrics[mode][name].append(total / count)

    def _log_mean(self, mode: str, name: str, values: torch.Tensor) -> None:
        values = values.detach().float().reshape(-1)
        self._log_masked(mode, name, values, torch.ones_like(values))

    def _log_max(self, mode: str, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        local = torch.where(
            mask.bool(), values.detach().float(), torch.full_like(values, float("-inf"))
        ).max()
        self._metrics[mode][name].append(self.accelerator.gather(local.reshape(1)).max().item())
