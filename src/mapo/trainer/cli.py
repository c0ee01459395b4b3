"""``mapo train --config FILE.yaml``: GRPO or MAPO on audio QA data, parsed with TRL's ``TrlParser``.

Three dataclasses are parsed from one YAML file plus CLI overrides (CLI wins): :class:`TrainScriptArguments`
(data, rewards, judge, which trainer), :class:`~mapo.trainer.MAPOConfig` (TRL's GRPO fields + MAPO's) and TRL's
``ModelConfig`` (model path, dtype, LoRA). Run it under ``accelerate launch`` for several GPUs / DeepSpeed / FSDP.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class TrainScriptArguments:
    """Data, rewards and trainer choice for ``mapo train``."""

    trainer: str = field(
        default="mapo",
        metadata={"help": "'mapo' (MAPOTrainer) or 'grpo' (AudioGRPOTrainer, the GRPO baseline)."},
    )
    train_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Training JSONL file(s) (format: mapo.data.qa module docstring)."},
    )
    train_proportions: list[float] | None = field(
        default=None,
        metadata={"help": "Mixture proportions, one per train file (paper phase 2: 48.6,27.1,17.1,7.1)."},
    )
    mixture_size: int | None = field(
        default=None, metadata={"help": "Rows in the mixture (default: the largest without repetition)."}
    )
    eval_files: list[str] = field(
        default_factory=list, metadata={"help": "Optional evaluation JSONL file(s)."}
    )
    rewards: list[str] = field(
        default_factory=lambda: ["accuracy", "format", "consistency"],
        metadata={"help": "Reward functions by name: accuracy, format, consistency (the paper's λ 2/1/1)."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "Optional system prompt for every row."}
    )
    judge_base_url: str | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible base URL of the consistency judge (e.g. http://host:9000/v1); default: the "
            "MAPO_JUDGE_BASE_URL environment variable."
        },
    )
    judge_model: str | None = field(
        default=None,
        metadata={"help": "Model name served by the judge (default: MAPO_JUDGE_MODEL, else the paper's)."},
    )
    judge_timeout: float | None = field(
        default=None, metadata={"help": "Seconds per judge request (default: MAPO_JUDGE_TIMEOUT, else 60)."}
    )
    save_merged: bool = field(
        default=True,
        metadata={
            "help": "With LoRA, also save the adapter merged into the base model under OUTPUT_DIR/merged, so a next "
            "phase (the paper's two-phase curriculum) can start from it as model_name_or_path."
        },
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in an output_dir that holds another run (its checkpoints are deleted). Without "
            "it, such a folder is refused unless --resume_from_checkpoint is given."
        },
    )
    skip_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Train on the valid rows when some training rows are bad (missing/undecodable/too short or too "
            "long audio, gold answer not among the choices); their count is logged. Default: stop with a report."
        },
    )
    long_audio: str = field(
        default="error",
        metadata={
            "help": "Clips longer than the model family's limit (ModalitySpec.max_audio_seconds, 30 s for the "
            "Qwen families): 'error' (a bad row) or 'truncate' (keep the first max_audio_seconds, logged)."
        },
    )
    lora_expert_r: int | None = field(
        default=None,
        metadata={
            "help": "LoRA rank of the fused MoE expert stacks (lora_target_parameters), per expert; default lora_r. "
            "peft gives each of the E experts its own rank-r factors (mapo.trainer.lora.with_expert_rank)."
        },
    )
    lora_expert_alpha: int | None = field(
        default=None, metadata={"help": "LoRA α of the expert stacks; default lora_alpha."}
    )

    def __post_init__(self) -> None:
        if self.long_audio not in ("error", "truncate"):
            raise ValueError(f"long_audio must be 'error' or 'truncate', got {self.long_audio!r}")
        if self.trainer not in ("mapo", "grpo"):
            raise ValueError(f"trainer must be 'mapo' or 'grpo', got {self.trainer!r}")
        if isinstance(self.train_files, str):
            self.train_files = [self.train_files]
        if isinstance(self.eval_files, str):
            self.eval_files = [self.eval_files]


def parse(argv: list[str] | None = None):
    from trl import ModelConfig, TrlParser

    from . import MAPOConfig

    parser = TrlParser((TrainScriptArguments, MAPOConfig, ModelConfig), prog="mapo train")
    return parser.parse_args_and_config(args=argv)


def build_rewards(script: TrainScriptArguments, weights: list[float] | None):
    from .. import rewards as R
    from .preflight import judge_client

    return R.build_rewards(names=tuple(script.rewards), weights=weights, judge=judge_client(script))


def run(argv: list[str] | None = None) -> None:
    """Entry point of ``mapo train``."""
    argv = list(argv or [])
    if "--help-mapo" in argv or "-h" in argv or "--help" in argv:
        from .cli_help import mapo_help

        print(mapo_help(TrainScriptArguments))
        if "--help-mapo" in argv:
            return
        print("\nAll settings:\n")
    import transformers
    from trl import get_peft_config

    from ..data import AudioPromptTransform
    from ..modality import load_policy_model
    from . import AudioGRPOTrainer, MAPOTrainer
    from .lora import with_expert_rank
    from .preflight import load_training_data, preflight
    from .progress import training_summary, use_compact_progress

    script, args, model_args = parse(argv)
    # Everything that can be wrong in the config or the data is checked before the model loads.
    resume = preflight(script, args, model_args)
    peft_config = with_expert_rank(
        get_peft_config(model_args), script.lora_expert_r, script.lora_expert_alpha
    )
    funcs, weights, accuracy_name = build_rewards(script, args.reward_weights)
    args.reward_weights = weights
    if script.trainer == "mapo":
        args.accuracy_reward_name = accuracy_name
    processor = transformers.AutoProcessor.from_pretrained(
        model_args.model_name_or_path, padding_side="left", trust_remote_code=args.trust_remote_code
    )
    train, evaluation = load_training_data(script, args, model_args, processor)
    transformers.set_seed(args.seed)

    init_kwargs = dict(args.model_init_kwargs or {})
    if model_args.dtype is not None:
        init_kwargs.setdefault("dtype", model_args.dtype)
    if model_args.attn_implementation is not None:
        init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    if model_args.model_revision is not None:
        init_kwargs.setdefault("revision", model_args.model_revision)
    args.model_init_kwargs = init_kwargs
    model = load_policy_model(model_args.model_name_or_path, args)
    sr = processor.feature_extractor.sampling_rate
    transform = AudioPromptTransform(sampling_rate=sr, system_prompt=script.system_prompt)
    train = train.with_transform(transform)
    evaluation = evaluation.with_transform(transform) if evaluation is not None else None

    cls = MAPOTrainer if script.trainer == "mapo" else AudioGRPOTrainer
    trainer = cls(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=peft_config,
    )
    use_compact_progress(trainer)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    merged_dir = None
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(args.output_dir)
        logger.info("saved to %s", os.path.abspath(args.output_dir))
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if script.save_merged and hasattr(unwrapped, "merge_and_unload"):
            merged_dir = os.path.join(args.output_dir, "merged")
            unwrapped.merge_and_unload().save_pretrained(merged_dir)
            processor.save_pretrained(merged_dir)
            logger.info("merged to %s", os.path.abspath(merged_dir))
        logger.info(
            training_summary(trainer, result.metrics, model_dir=args.output_dir, merged_dir=merged_dir)
        )
