"""Benchmark evaluation: MMAU (test-mini), MMAR, MMSU and MMAU-Pro in the paper's groupings (Tables 2-3).

* :func:`load_benchmark`: a local benchmark file → :class:`EvalItem` s (formats in ``docs/eval.md``).
* :func:`generate_predictions`: batched generation with the training prompt → :class:`Prediction` s
  (saved as JSONL by :func:`write_predictions`, re-read by :func:`read_predictions`).
* :func:`score_predictions`: multiple choice with the accuracy reward's rules, deterministic instruction-following
  checks, an optional LLM judge for open-ended items; :func:`summarize`: overall (micro-average over scored items)
  and the paper's columns.
* CLI: ``mapo eval`` (:func:`mapo.eval.cli.main`).
"""

from mapo.eval.instruction_following import UncheckableInstruction, check_instruction
from mapo.eval.items import KINDS, EvalItem, Prediction
from mapo.eval.loaders import BENCHMARKS, BenchmarkSpec, load_benchmark, read_records
from mapo.eval.open_judge import OPEN_JUDGE_PROMPT, grade_open, parse_grades
from mapo.eval.report import print_summary, summary_tables, write_results
from mapo.eval.runner import (
    OPEN_INSTRUCTION,
    GenerationSettings,
    PromptBatch,
    build_messages,
    decode_completions,
    encode_prompts,
    generate_batch,
    generate_predictions,
    load_clips,
    load_model_and_processor,
    read_predictions,
    write_predictions,
)
from mapo.eval.scoring import extract_final_answer, match_choice, score_predictions, summarize

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
