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
        metadata={"help": "OpenAI-compatible base URL of the consistency judge (e.g. http://host:9000/v1)."},
    )
    judge_model: str | None = field(default=None, metadata={"help": "Model name served by the judge."})
    judge_timeout: float = field(default=60.0, metadata={"help": "Seconds per judge request."})
    save_merged: bool = field(
        default=True,
        metadata={
            "help": "With LoRA, also save the adapter merged into the base model under OUTPUT_DIR/merged, so a next "
            "phase (the paper's two-phase curriculum) can start from it as model_name_or_path."
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

    judge = None
    if "consistency" in script.rewards:
        judge = R.JudgeClient(
            base_url=script.judge_base_url, model=script.judge_model, timeout=script.judge_timeout
        )
    return R.build_rewards(names=tuple(script.rewards), weights=weights, judge=judge)


def run(argv: list[str] | None = None) -> None:
    """Entry point of ``mapo train``."""
    import transformers
    from trl import get_peft_config

    from ..data import AudioPromptTransform, load_audio_qa
    from ..modality import load_policy_model
    from . import AudioGRPOTrainer, MAPOTrainer
    from .lora import with_expert_rank

    script, args, model_args = parse(argv)
    peft_config = with_expert_rank(
        get_peft_config(model_args), script.lora_expert_r, script.lora_expert_alpha
    )
    if not script.train_files:
        raise SystemExit("mapo train: give train_files (in the YAML config or --train_files a.jsonl b.jsonl)")
    if model_args.model_name_or_path is None:
        raise SystemExit("mapo train: give model_name_or_path")
    transformers.set_seed(args.seed)

    funcs, weights, accuracy_name = build_rewards(script, args.reward_weights)
    args.reward_weights = weights
    if script.trainer == "mapo":
        args.accuracy_reward_name = accuracy_name

    init_kwargs = dict(args.model_init_kwargs or {})
    if model_args.dtype is not None:
        init_kwargs.setdefault("dtype", model_args.dtype)
    if model_args.attn_implementation is not None:
        init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    if model_args.model_revision is not None:
        init_kwargs.setdefault("revision", model_args.model_revision)
    args.model_init_kwargs = init_kwargs
    model = load_policy_model(model_args.model_name_or_path, args)
    processor = transformers.AutoProcessor.from_pretrained(
        model_args.model_name_or_path, padding_side="left", trust_remote_code=args.trust_remote_code
    )
    sr = processor.feature_extractor.sampling_rate
    transform = AudioPromptTransform(sampling_rate=sr, system_prompt=script.system_prompt)
    train = load_audio_qa(
        script.train_files, script.train_proportions, total=script.mixture_size, seed=args.seed
    ).with_transform(transform)
    evaluation = load_audio_qa(script.eval_files).with_transform(transform) if script.eval_files else None

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
    # TrainingArguments' own field: a checkpoint folder, or "latest" for the newest one in output_dir.
    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = True
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(args.output_dir)
        logger.info("saved to %s", os.path.abspath(args.output_dir))
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if script.save_merged and hasattr(unwrapped, "merge_and_unload"):
            merged_dir = os.path.join(args.output_dir, "merged")
            unwrapped.merge_and_unload().save_pretrained(merged_dir)
            processor.save_pretrained(merged_dir)
            logger.info("merged model saved to %s", os.path.abspath(merged_dir))
