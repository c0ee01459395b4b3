"""What ``mapo train`` shows on the console: one compact progress line, and a closing summary.

transformers prints every logging-step dict (60+ keys for MAPO) to the console; those dicts belong to the tracker
(``report_to``), which still receives all of them. The console gets a progress bar whose postfix holds the few
numbers a person watches (:data:`CONSOLE_KEYS`), and at the end :func:`training_summary`.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

#: (log key, short label) shown on the progress line, in this order, when present.
CONSOLE_KEYS: tuple[tuple[str, str], ...] = (
    ("loss", "loss"),
    ("reward", "reward"),
    ("rewards/accuracy_reward/mean", "acc"),
    ("mapo/delta_h_abs_mean", "|Δh|"),
    ("mapo/audio_mass_mean", "a_t"),
    ("audio/influence", "audio"),
)


def compact(logs: dict[str, Any]) -> str:
    """``loss 0.0123 · reward 1.25 · acc 0.5`` from a logging-step dict (keys of :data:`CONSOLE_KEYS`)."""
    parts = []
    for key, label in CONSOLE_KEYS:
        value = logs.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:.4g}")
    return " · ".join(parts)


class CompactProgressCallback(ProgressCallback):
    """transformers' progress bar, with the compact numbers as its postfix instead of a printed dict per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            line = compact(logs)
            if line:
                self.training_bar.set_postfix_str(line, refresh=True)


class CompactPrinterCallback(TrainerCallback):
    """``disable_tqdm=True``: one compact line per logging step instead of the dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            line = compact(logs)
            if line:
                print(f"step {state.global_step}/{state.max_steps} · {line}", flush=True)


def use_compact_progress(trainer) -> None:
    """Swap the trainer's console callbacks for the compact ones (the tracker callbacks are untouched)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(CompactProgressCallback)
    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(CompactPrinterCallback)


def last_value(log_history: list[dict[str, Any]], key: str) -> float | None:
    """The last logged value of ``key``."""
    for entry in reversed(log_history):
        if isinstance(entry.get(key), int | float):
            return float(entry[key])
    return None


def training_summary(
    trainer, metrics: dict[str, Any], *, model_dir: str, merged_dir: str | None = None
) -> str:
    """Closing summary: steps, wall time, final reward / accuracy / audio influence, and where everything is."""
    from .checkpoints import list_checkpoints

    history = trainer.state.log_history
    runtime = metrics.get("train_runtime")
    lines = [
        f"training done: {trainer.state.global_step} steps"
        + (f" in {runtime:.1f} s" if isinstance(runtime, int | float) else "")
    ]
    finals = []
    for key, label in (
        ("reward", "reward"),
        ("rewards/accuracy_reward/mean", "accuracy"),
        ("audio/influence", "audio influence (first batch)"),
    ):
        value = last_value(history, key)
        if value is not None:
            finals.append(f"{label} {value:.4g}")
    if finals:
        lines.append("final " + ", ".join(finals))
    lines.append(f"model: {os.path.abspath(model_dir)}")
    if merged_dir:
        lines.append(f"merged model: {os.path.abspath(merged_dir)}")
    checkpoints = list_checkpoints(trainer.args.output_dir)
    if checkpoints:
        lines.append(f"checkpoints: {len(checkpoints)} (newest {os.path.abspath(checkpoints[-1])})")
    report_to = [r for r in (trainer.args.report_to or []) if r != "none"]
    if report_to:
        lines.append(
            f"metrics: {', '.join(report_to)} (logging_dir {os.path.abspath(trainer.args.logging_dir)})"
        )
    else:
        lines.append("metrics: trainer_state.json of each checkpoint (report_to is empty)")
    return "\n  ".join(lines)
