"""The audio trainers' protocol with TRL 1.16's ``GRPOTrainer``, as one object: :data:`TRL_PROTOCOL`.

:class:`~mapo.trainer.AudioGRPOTrainer` and :class:`~mapo.trainer.MAPOTrainer` never copy TRL code: they override
a few of its methods and put tensors where TRL reads them *later*. That is correct only in TRL's call order, so
the order is written down here, and ``tests/trainer/test_trl_contract.py`` checks every entry against the
installed TRL (each overridden method exists with these parameters; every TRL method the two classes override is
listed here; the source facts each hook relies on, read from TRL's syntax tree).

Call order of one optimizer step (``A:`` AudioGRPOTrainer, ``M:`` MAPOTrainer, unmarked lines are TRL's)::

    Trainer.train ─ training_step ─ _prepare_inputs
    │
    ├─ once per generation batch: _generate_and_score_completions(inputs)            [generation batch]
    │   ├─ A: forget the previous batch's audio; scoring forwards read the *pending* audio from now on
    │   ├─ _tokenize_prompts(prompts)
    │   │     └─ A: keep the processor's audio features (spec.audio_feature_kwargs) as pending audio
    │   ├─ generate(...)                   TRL passes the processor's multimodal fields itself
    │   ├─ _get_per_token_logps_and_entropies(old policy / KL reference)
    │   │     └─ A: add the pending audio, row-sliced per chunk (TRL would drop it)
    │   ├─ _calculate_rewards(...)
    │   │     └─ A: keep this process's rows of the per-function rewards (the failure gate needs raw accuracy)
    │   ├─ advantages normalised per group ─ output dict
    │   ├─ A: audio features into the output dict
    │   └─ M: H_text(·|y<t, x_text) of the text-only reference, Â (a copy), POS gate, failure flags into the dict
    │   then TRL shuffles and splits every [B, ...] tensor of the dict into micro-batches (the audio and MAPO's
    │   keys travel with their rows)
    │
    └─ per micro-batch: compute_loss ─ _compute_loss(model, inputs)                  [micro-batch]
        ├─ A: the micro-batch's audio becomes visible to the forward
        ├─ M: stash ``inputs``; open an audio_attention capture (η > 0)
        ├─ _get_per_token_logps_and_entropies(model, ..., compute_entropy=True)      the one training forward
        │     └─ M, after TRL's forward: Δh = H_text − H_policy (live entropies), ω̃ (eq. 1) folded into
        │        inputs["advantages"] as [B, T]; the detached coefficients of eq. 4
        ├─ reads inputs["advantages"] (now ω̃-weighted; TRL keeps [B, T] as is), old / reference log-probs
        ├─ loss_type="grpo": per-sequence mean of eq. 2, + β·KL
        └─ M: + η·L_attn(a_t from the capture, the coefficients), divided by the accumulation steps

    resume: Trainer.train(resume_from_checkpoint) ─ A: True / "latest" = the newest *complete* checkpoint
            └─ Trainer._load_from_checkpoint ─ A: weights through from_pretrained (the saved layout differs)

State the trainers keep between TRL's calls, and nothing else: ``_pending_audio`` (the generation batch's audio
until it is in the output dict), ``_visible_audio`` (the audio the next scoring forward adds), ``_local_rewards_per_func``
(this process's rewards of the current generation batch) and, in MAPOTrainer, ``_loss_inputs`` (the micro-batch
whose training forward is running, consumed by the hook right after it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ATTN_COEF_KEY",
    "DELTA_H_KEY",
    "FAILED_KEY",
    "POS_GATE_KEY",
    "SEQ_ADVANTAGES_KEY",
    "TEXT_ENTROPY_KEY",
    "TRL_PROTOCOL",
    "Hook",
    "TRLProtocol",
]

# Keys MAPOTrainer adds to TRL's batch dict ([B] or [B, T] tensors, so they survive TRL's shuffle/split).
TEXT_ENTROPY_KEY = "mapo_text_entropy"  # H(π_text-ref) per completion token, generation time
SEQ_ADVANTAGES_KEY = "mapo_seq_advantages"  # Â per sequence, before ω̃ is folded in
POS_GATE_KEY = "mapo_pos_gate"  # g^pos per completion token
FAILED_KEY = "mapo_failed"  # 1[r_acc ≤ θ_fail] per sequence
DELTA_H_KEY = "mapo_delta_h"  # Δh per completion token, written at loss time (live policy entropy)
ATTN_COEF_KEY = "mapo_attn_coef"  # detached coefficients of eq. 4, written at loss time


@dataclass(frozen=True)
class Hook:
    """One TRL method the audio trainers override.

    Attributes:
        method: the ``GRPOTrainer`` (or ``transformers.Trainer``) method.
        params: the leading parameters (after ``self``) the override receives or passes on, in TRL's order.
        owners: the classes that override it (``"AudioGRPOTrainer"``, ``"MAPOTrainer"``).
        phase: ``"construction"``, ``"generation batch"``, ``"micro-batch"`` or ``"resume"``.
        does: what the override adds.
        trl_then: what TRL does after the override returned (or after the call it wraps) that the override
            relies on.
    """

    method: str
    params: tuple[str, ...]
    owners: tuple[str, ...]
    phase: str
    does: str
    trl_then: str


@dataclass(frozen=True)
class TRLProtocol:
    """The hooks, in call order, and the batch-dict keys MAPO adds (see the module docstring for the diagram)."""

    trl_version: str
    hooks: tuple[Hook, ...]
    batch_keys: tuple[str, ...]

    def hook(self, method: str) -> Hook:
        for h in self.hooks:
            if h.method == method:
                return h
        raise KeyError(f"{method} is not a hook of the TRL protocol")


TRL_PROTOCOL = TRLProtocol(
    trl_version="1.16",
    hooks=(
        Hook(
            "__init__",
            ("model", "reward_funcs", "args", "train_dataset"),
            ("AudioGRPOTrainer", "MAPOTrainer"),
            "construction",
            "A: loads a path with the thinker class, builds its own frozen KL reference (args.beta set to 0 for "
            "TRL's __init__ and restored), lends config.image_token_id = the audio placeholder for __init__ only, "
            "then suppresses the audio placeholder and markers in generation. M: switches the decoder to the probe "
            "attention, checks the target layers against the model, builds the text-only reference.",
            "TRL reads config.image_token_id for its suppress list and builds a reference model only when "
            "args.beta != 0; neither reads them again after __init__.",
        ),
        Hook(
            "_generate_and_score_completions",
            ("inputs",),
            ("AudioGRPOTrainer", "MAPOTrainer"),
            "generation batch",
            "A: scoring forwards inside it read the pending audio; the audio goes into the output dict. "
            "M: text-only reference entropies, Â copy, POS gate and failure flags go into the output dict.",
            "TRL shuffles and splits every tensor of the dict whose first dim is the batch into micro-batches.",
        ),
        Hook(
            "_tokenize_prompts",
            ("prompts",),
            ("AudioGRPOTrainer",),
            "generation batch",
            "A: exactly one clip per prompt; keeps spec.audio_feature_kwargs of the processor output as pending "
            "audio, refuses an output the spec does not list.",
            "TRL passes the same multimodal fields to generate(), then scores the completions.",
        ),
        Hook(
            "_calculate_rewards",
            ("inputs", "prompts", "completions", "completion_ids_list"),
            ("AudioGRPOTrainer",),
            "generation batch",
            "A: keeps this process's rows of the per-function rewards.",
            "TRL gathers the rewards over processes and normalises the advantages per group.",
        ),
        Hook(
            "_get_per_token_logps_and_entropies",
            (
                "model",
                "input_ids",
                "attention_mask",
                "logits_to_keep",
                "batch_size",
                "compute_entropy",
                "compute_aux_loss",
            ),
            ("AudioGRPOTrainer", "MAPOTrainer"),
            "generation batch and micro-batch",
            "A: passes the visible audio (row-sliced per chunk) to every scoring forward. M: right after the "
            "training forward, Δh from its live entropies; ω̃ folded into inputs['advantages'] ([B, T]); the "
            "eq. 4 coefficients into the micro-batch.",
            "TRL's _compute_loss reads inputs['advantages'] only after this forward and keeps a [B, T] tensor as "
            "is; the training forward is one call with compute_entropy=True and no chunking.",
        ),
        Hook(
            "_compute_loss",
            ("model", "inputs"),
            ("AudioGRPOTrainer", "MAPOTrainer"),
            "micro-batch",
            "A: makes the micro-batch's audio visible. M: stashes the micro-batch for the hook above, runs TRL's "
            "loss inside an audio_attention capture and adds η·L_attn.",
            "TRL aggregates loss_type='grpo' as the per-sequence mean of eq. 2 and adds β·KL.",
        ),
        Hook(
            "train",
            ("resume_from_checkpoint",),
            ("AudioGRPOTrainer",),
            "resume",
            "A: resume_from_checkpoint=True / 'latest' resolves to the newest complete checkpoint "
            "(mapo.trainer.checkpoints skips half-written ones with a warning); an incomplete explicit path is refused.",
            "transformers' Trainer.train takes a checkpoint path and resumes from it without checking completeness.",
        ),
        Hook(
            "_load_from_checkpoint",
            ("resume_from_checkpoint", "model"),
            ("AudioGRPOTrainer",),
            "resume",
            "A: full-weight checkpoints are loaded through from_pretrained (PEFT, FSDP and DeepSpeed keep TRL's "
            "path).",
            "transformers' Trainer restores optimizer, scheduler and RNG state afterwards from the same folder.",
        ),
    ),
    batch_keys=(
        TEXT_ENTROPY_KEY,
        SEQ_ADVANTAGES_KEY,
        POS_GATE_KEY,
        FAILED_KEY,
        DELTA_H_KEY,
        ATTN_COEF_KEY,
    ),
)
