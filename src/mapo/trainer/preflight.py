"""``mapo train``'s checks before any weight is loaded: a bad config costs seconds, not a model load and rollouts.

In order: the required settings (``train_files``, ``model_name_or_path``), the output folder (a new run refuses
another run's folder; ``latest`` is resolved to a complete checkpoint), the judge when the consistency reward is on
(YAML keys, then the ``MAPO_JUDGE_*`` environment variables), the POS tagger's data and ``target_layers``
against the depth read from the model's ``config.json``. The training rows are checked by
:func:`mapo.data.validate` once the processor is known (it sets the shortest usable clip).
"""

from __future__ import annotations

import logging
from typing import Any

from ..probe import resolve_target_layers
from ..rewards.judge import ENV_PREFIX, JudgeClient
from .checkpoints import check_output_dir, resolve_resume
from .config_checks import check_pos_tagger, model_depth

logger = logging.getLogger(__name__)


def judge_client(script: Any) -> JudgeClient | None:
    """The consistency judge of ``mapo train``: the YAML/CLI keys win over the ``MAPO_JUDGE_*`` variables.

    ``None`` when ``consistency`` is not among ``rewards``. A missing URL is an error that names the YAML keys, the
    environment variables and the way to train without the judge.
    """
    if "consistency" not in script.rewards:
        return None
    overrides = {
        key: value
        for key, value in (
            ("base_url", script.judge_base_url),
            ("model", script.judge_model),
            ("timeout", script.judge_timeout),
        )
        if value is not None
    }
    if "base_url" not in overrides and not JudgeClient.env_configured(ENV_PREFIX):
        raise ValueError(
            f"rewards includes 'consistency' (the default rewards are {'accuracy, format, consistency'}: the "
            "paper's r_cons needs an LLM judge) but no judge is configured. Set judge_base_url (and judge_model) "
            f"in the YAML config or with --judge_base_url URL --judge_model NAME, or the environment variables "
            f"{ENV_PREFIX}BASE_URL / {ENV_PREFIX}MODEL; or train without it: rewards: [accuracy, format]."
        )
    try:
        return JudgeClient.from_env(ENV_PREFIX, **overrides)
    except ValueError as err:
        raise ValueError(
            f"judge settings (judge_base_url / judge_model / judge_timeout or {ENV_PREFIX}*): {err}"
        ) from err


def preflight(script: Any, args: Any, model_args: Any) -> str | None:
    """Run the checks (module docstring); return the checkpoint to resume from, or ``None`` for a new run."""
    if not script.train_files:
        raise ValueError(
            "no training data: set train_files in the YAML config (or --train_files a.jsonl b.jsonl)"
        )
    if model_args.model_name_or_path is None:
        raise ValueError("no model: set model_name_or_path in the YAML config (or --model_name_or_path PATH)")
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    check_output_dir(args.output_dir, resuming=resume is not None, overwrite=script.overwrite_output_dir)
    if script.trainer == "mapo":
        check_pos_tagger(args.pos_tagger, args.attention_branch_on)
        if args.attention_branch_on and args.target_layers is not None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                model_args.model_name_or_path,
                revision=model_args.model_revision,
                trust_remote_code=getattr(args, "trust_remote_code", False),
            )
            resolve_target_layers(args.target_layers, model_depth(config))
    return resume


def row_checks(script: Any, model_args: Any, processor: Any, trust_remote_code: bool = False):
    """The :class:`mapo.data.validate.RowChecks` of this model: its processor's rate and shortest clip, its
    family's longest kept clip (``ModalitySpec.max_audio_seconds``, read from ``config.json``)."""
    from transformers import AutoConfig

    from ..data.validate import RowChecks, processor_min_seconds
    from ..modality import resolve_modality

    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    tokenizer = getattr(processor, "tokenizer", processor)
    spec = resolve_modality(config, tokenizer=tokenizer)
    sampling_rate = int(
        getattr(getattr(processor, "feature_extractor", None), "sampling_rate", spec.sampling_rate)
    )
    return RowChecks(
        sampling_rate=sampling_rate,
        min_seconds=processor_min_seconds(processor, spec.audio_token_id, sampling_rate),
        max_seconds=spec.max_audio_seconds,
        long_audio=script.long_audio,
    )


def load_training_data(script: Any, args: Any, model_args: Any, processor: Any):
    """The training (and evaluation) datasets of ``mapo train``, every row checked (one report of every bad row)."""
    from ..data import load_audio_qa

    checks = row_checks(script, model_args, processor, getattr(args, "trust_remote_code", False))
    logger.info(
        "checking %d training file(s): audio %.3f-%s s at %d Hz, long audio: %s",
        len(script.train_files),
        checks.min_seconds,
        f"{checks.max_seconds:g}" if checks.max_seconds is not None else "∞",
        checks.sampling_rate,
        checks.long_audio,
    )
    train = load_audio_qa(
        script.train_files,
        script.train_proportions,
        total=script.mixture_size,
        seed=args.seed,
        checks=checks,
        skip_invalid=script.skip_invalid_rows,
    )
    evaluation = None
    if script.eval_files:
        evaluation = load_audio_qa(script.eval_files, checks=checks, skip_invalid=script.skip_invalid_rows)
    return train, evaluation
