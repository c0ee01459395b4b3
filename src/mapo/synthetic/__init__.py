"""Synthetic tone-melody benchmark: a task with a language-prior trap and a tiny audio LM that collapses.

    task = make_task(seed=0, n_train=2000, n_eval=200)             # rows: audio, question, choices, answer, ...
    model, processor = build_tiny_audio_lm(seed=0)                  # real Qwen2-Audio classes, offline
    report = warm_up(model, processor, task, budget="default", seed=0)
    metrics = evaluate(model, processor, task.prior + task.trap)   # accuracy, faithfulness, a_t decay, Δh

See ``docs/synthetic.md`` for the task design and the tuning record.
"""

from .evaluate import completion_signals, evaluate
from .model import ModelSize, audio_token_count, build_processor, build_tiny_audio_lm, build_tokenizer
from .task import (
    NOTE_NAMES,
    SyntheticTask,
    TaskConfig,
    completion_text,
    make_task,
    note_token_labels,
    parse_completion,
    prompt_of,
)
from .warmup import BUDGETS, TASK_SIZES, WarmupBudget, WarmupReport, warm_up

__all__ = [
    "BUDGETS",
    "NOTE_NAMES",
    "ModelSize",
    "SyntheticTask",
    "TASK_SIZES",
    "TaskConfig",
    "WarmupBudget",
    "WarmupReport",
    "completion_signals",
    "audio_token_count",
    "build_processor",
    "build_tiny_audio_lm",
    "build_tokenizer",
    "completion_text",
    "evaluate",
    "make_task",
    "note_token_labels",
    "parse_completion",
    "prompt_of",
    "warm_up",
]
