"""``mapo check-data FILE...``: the training-data checks of ``mapo train``, alone, with clip-length statistics.

Examples::

    mapo check-data data/avqa_train.jsonl                         # structure, gold answers, clips decode (16 kHz)
    mapo check-data data/*.jsonl --model Qwen/Qwen2-Audio-7B-Instruct   # + the model's shortest / longest clip

Exit code 0 when every row is usable, 1 when some are not (each listed as ``file:line: id=...: reason``), 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mapo check-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("files", nargs="+", help="training JSONL files (format: docs/training.md)")
    p.add_argument(
        "--model",
        default=None,
        help="model path or hub id: its processor sets the rate and the shortest usable clip, its family the "
        "longest (ModalitySpec.max_audio_seconds); only config and processor files are read",
    )
    p.add_argument("--sampling-rate", type=int, default=16000, help="without --model (default 16000)")
    p.add_argument(
        "--max-seconds", type=float, default=None, help="longest usable clip (default: the model's)"
    )
    p.add_argument(
        "--min-seconds", type=float, default=None, help="shortest usable clip (default: the processor's)"
    )
    p.add_argument(
        "--long-audio", choices=("error", "truncate"), default="error", help="as mapo train's long_audio"
    )
    p.add_argument("--no-audio", action="store_true", help="check structure and gold answers only (fast)")
    p.add_argument("--workers", type=int, default=4, help="clips decoded in parallel")
    return p


def _checks(args):
    from ..data.clips import MIN_AUDIO_SECONDS
    from ..data.validate import RowChecks

    if args.model is None:
        return RowChecks(
            check_audio=not args.no_audio,
            sampling_rate=args.sampling_rate,
            min_seconds=args.min_seconds if args.min_seconds is not None else MIN_AUDIO_SECONDS,
            max_seconds=args.max_seconds,
            long_audio=args.long_audio,
            workers=args.workers,
        )
    from dataclasses import replace
    from types import SimpleNamespace

    from transformers import AutoProcessor

    from .preflight import row_checks

    processor = AutoProcessor.from_pretrained(args.model)
    checks = row_checks(
        SimpleNamespace(long_audio=args.long_audio),
        SimpleNamespace(model_name_or_path=args.model, model_revision=None),
        processor,
    )
    return replace(
        checks,
        check_audio=not args.no_audio,
        workers=args.workers,
        **({"min_seconds": args.min_seconds} if args.min_seconds is not None else {}),
        **({"max_seconds": args.max_seconds} if args.max_seconds is not None else {}),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checks = _checks(args)
    report = _report(args.files, checks)
    print(
        f"checked {report.rows} rows in {len(args.files)} file(s): audio "
        + (
            f"{checks.min_seconds:.3f}-{checks.max_seconds:g} s"
            if checks.max_seconds is not None
            else f">= {checks.min_seconds:.3f} s (no maximum: pass --model or --max-seconds)"
        )
        + f" at {checks.sampling_rate} Hz"
        + ("" if checks.check_audio else " (audio not checked: --no-audio)")
    )
    if checks.check_audio:
        print(report.stats_line())
    if report.ok:
        print("all rows usable")
        return 0
    print(f"{len(report.problems)} unusable row(s):")
    print(report.problem_lines())
    return 1


def _report(files, checks):
    """The report of :func:`mapo.data.qa.read_checked` without raising (a file with no usable row included)."""
    from ..data.qa import read_jsonl
    from ..data.validate import DataReport, check_rows

    report = DataReport(checks=checks)
    for path in files:
        structure: list = []
        rows = read_jsonl(path, structure)
        _, file_report = check_rows(rows, checks)
        file_report.rows += len(structure)
        file_report.problems[:0] = structure
        report.merge(file_report)
    return report
