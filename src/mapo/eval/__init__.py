"""Benchmark evaluation: MMAU (test-mini), MMAR, MMSU and MMAU-Pro in the paper's groupings (Tables 2-3).

* :func:`load_benchmark`: a local benchmark file → :class:`EvalItem` s (formats in ``docs/eval.md``).
* :func:`generate_predictions`: batched generation with the training prompt → :class:`Prediction` s
  (saved as JSONL by :func:`write_predictions`, re-read by :func:`read_predictions`).
* :func:`score_predictions`: multiple choice with the accuracy reward's rules, deterministic instruction-following
  checks, an optional LLM judge for open-ended items; :func:`summarize`: overall (micro-average over scored items)
  and the paper's columns.
* CLI: ``mapo eval`` (:func:`mapo.eval.cli.main`).
"""

# The names below are imported on first use (PEP 562), so ``mapo eval --help`` and the light modules (items,
# loaders, scoring) do not pay for torch/transformers, which only the runner needs.
from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule of mapo.eval that defines it.
_EXPORTS: dict[str, str] = {
    "UncheckableInstruction": "instruction_following",
    "check_instruction": "instruction_following",
    "KINDS": "items",
    "EvalItem": "items",
    "Prediction": "items",
    "BENCHMARKS": "loaders",
    "BenchmarkSpec": "loaders",
    "load_benchmark": "loaders",
    "read_records": "loaders",
    "OPEN_JUDGE_PROMPT": "open_judge",
    "grade_open": "open_judge",
    "parse_grades": "open_judge",
    "print_summary": "report",
    "summary_tables": "report",
    "write_results": "report",
    "OPEN_INSTRUCTION": "runner",
    "GenerationSettings": "runner",
    "PromptBatch": "runner",
    "build_messages": "runner",
    "decode_completions": "runner",
    "encode_prompts": "runner",
    "generate_batch": "runner",
    "generate_predictions": "runner",
    "load_clips": "runner",
    "load_model_and_processor": "runner",
    "read_predictions": "runner",
    "write_predictions": "runner",
    "extract_final_answer": "scoring",
    "match_choice": "scoring",
    "score_predictions": "scoring",
    "summarize": "scoring",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"mapo.eval.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mapo.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "BENCHMARKS",
    "KINDS",
    "OPEN_INSTRUCTION",
    "OPEN_JUDGE_PROMPT",
    "BenchmarkSpec",
    "EvalItem",
    "GenerationSettings",
    "Prediction",
    "PromptBatch",
    "UncheckableInstruction",
    "build_messages",
    "check_instruction",
    "decode_completions",
    "encode_prompts",
    "extract_final_answer",
    "generate_batch",
    "generate_predictions",
    "grade_open",
    "load_benchmark",
    "load_clips",
    "load_model_and_processor",
    "match_choice",
    "parse_grades",
    "print_summary",
    "read_predictions",
    "read_records",
    "score_predictions",
    "summarize",
    "summary_tables",
    "write_predictions",
    "write_results",
]
