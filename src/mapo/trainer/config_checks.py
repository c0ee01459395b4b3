"""Set-up checks that must fail in seconds, before a model loads: reporting backends, the POS tagger's data, the
decoder depth of a model config, an unconfigured judge.

Each raises ``ValueError`` (or the tagger's ``NltkDataMissingError``) whose message names the setting and the fix.
``MAPOConfig.__post_init__`` runs the ones that need no model; ``MAPOTrainer.__init__`` and ``mapo train`` (before
loading the weights, from the model's ``config.json``) run the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

#: report_to backend -> (transformers availability check, install command).
REPORTING_BACKENDS: dict[str, tuple[str, str]] = {
    "tensorboard": (
        "is_tensorboard_available",
        "pip install 'mapo-rl[tensorboard]'  (or: pip install tensorboard)",
    ),
    "wandb": ("is_wandb_available", "pip install wandb"),
    "trackio": ("is_trackio_available", "pip install trackio"),
    "mlflow": ("is_mlflow_available", "pip install mlflow"),
    "comet_ml": ("is_comet_available", "pip install comet_ml"),
    "clearml": ("is_clearml_available", "pip install clearml"),
    "neptune": ("is_neptune_available", "pip install neptune"),
    "codecarbon": ("is_codecarbon_available", "pip install codecarbon"),
    "azure_ml": ("is_azureml_available", "pip install azureml-core"),
    "dagshub": ("is_dagshub_available", "pip install dagshub mlflow"),
    "flyte": ("is_flytekit_available", "pip install flytekit flytekitplugins-deck-standard"),
    "dvclive": ("is_dvclive_available", "pip install dvclive"),
    "swanlab": ("is_swanlab_available", "pip install swanlab"),
    "kubeflow": ("is_kubeflow_available", "pip install kubeflow"),
}


def check_report_to(report_to: Sequence[str] | None) -> None:
    """Every ``report_to`` backend is known and importable (transformers would say "update your PyTorch" for a
    missing tensorboard, and only when the trainer is built)."""
    from transformers.integrations import integration_utils

    for name in report_to or ():
        if name not in REPORTING_BACKENDS:
            raise ValueError(
                f"report_to: unknown backend {name!r}; use some of {sorted(REPORTING_BACKENDS)}, 'all' or 'none'"
            )
        checker, install = REPORTING_BACKENDS[name]
        if not getattr(integration_utils, checker)():
            raise ValueError(
                f"report_to includes {name!r} but {name} is not installed. Install it with:\n    {install}\n"
                f"or remove {name!r} from report_to (report_to: none logs to the console only)."
            )


def check_pos_tagger(pos_tagger: str, attention_branch_on: bool) -> None:
    """The POS tagger exists and has its data (the attention branch tags every completion; appendix E)."""
    from ..pos_gate import resolve_tagger

    if callable(pos_tagger):  # Python users may pass their own tagger (mapo.pos_gate.resolve_tagger)
        return
    if not isinstance(pos_tagger, str) or pos_tagger not in ("nltk", "lexicon"):
        raise ValueError(
            f"pos_tagger={pos_tagger!r}: use 'nltk' (the paper's tagger; needs its data) or 'lexicon' (built in)"
        )
    if attention_branch_on:
        resolve_tagger(pos_tagger)  # NltkDataMissingError with the download command


def model_depth(config) -> int:
    """Decoder layers of the language model under ``config`` (an audio LM, an Omni thinker or a full Omni)."""
    for attr in ("thinker_config",):  # full Omni checkpoints: the thinker is what MAPO trains
        if getattr(config, attr, None) is not None:
            config = getattr(config, attr)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    depth = getattr(text, "num_hidden_layers", None)
    if not isinstance(depth, int):
        raise ValueError(f"cannot read the decoder depth (num_hidden_layers) from {type(config).__name__}")
    return depth


def preflight_mapo(args) -> None:
    """The MAPOConfig check that needs more than the config: the POS tagger's data when the attention branch is on
    (``target_layers`` against the decoder depth is checked by ``MAPOTrainer.__init__`` and, before loading, by
    ``mapo train``)."""
    check_pos_tagger(args.pos_tagger, args.attention_branch_on)


def check_reward_funcs(reward_funcs) -> None:
    """A consistency judge among the rewards has somewhere to send its requests (URL given or in the environment);
    otherwise the first reward call would fail after the first rollouts."""
    funcs = reward_funcs if isinstance(reward_funcs, list | tuple) else [reward_funcs]
    for func in funcs:
        if getattr(func, "is_configured", True) is False:
            name = getattr(func, "__name__", type(func).__name__)
            raise ValueError(
                f"reward {name!r} needs an LLM judge but none is configured: pass ConsistencyJudge(JudgeClient("
                "base_url=..., model=...)), set MAPO_JUDGE_BASE_URL (and MAPO_JUDGE_MODEL), or with `mapo train` "
                "set judge_base_url / judge_model in the YAML config; or leave the consistency reward out"
            )
