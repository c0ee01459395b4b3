"""``mapo eval``: generate and score on local benchmark files, or re-score a predictions file.

Examples::

    mapo eval --benchmark mmau --data MMAU/mmau-test-mini.json --model Qwen/Qwen2-Audio-7B-Instruct \\
        --adapter runs/mapo/checkpoint-500 --output-dir results/mapo
    mapo eval --benchmark mmau --data mmau.json --benchmark mmar --data MMAR/MMAR-meta.json --model ...
    mapo eval --predictions results/mapo/predictions.jsonl --judge-url http://localhost:8000/v1
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mapo eval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    src = p.add_argument_group("what to score")
    src.add_argument(
        "--benchmark", action="append", default=[], help="mmau | mmar | mmsu | mmau-pro (repeatable)"
    )
    src.add_argument(
        "--data", action="append", default=[], help="the benchmark's metadata file, one per --benchmark"
    )
    src.add_argument(
        "--audio-root",
        action="append",
        default=[],
        help="folder the audio paths are relative to (one for all, or one per --benchmark; default: the data file's)",
    )
    src.add_argument("--limit", type=int, default=None, help="first N items of each benchmark")
    src.add_argument("--predictions", nargs="+", default=None, help="re-score these predictions JSONL files")
    mdl = p.add_argument_group("model")
    mdl.add_argument("--model", help="base model path or hub id (or a LoRA adapter folder)")
    mdl.add_argument("--adapter", default=None, help="LoRA adapter folder (peft), merged into the base model")
    mdl.add_argument(
        "--processor", default=None, help="processor path (default: the adapter's, else the model's)"
    )
    mdl.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    mdl.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: where the model loads)")
    gen = p.add_argument_group("generation")
    gen.add_argument("--batch-size", type=int, default=4)
    gen.add_argument("--max-new-tokens", type=int, default=2048)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--system-prompt", default=None)
    sc = p.add_argument_group("scoring")
    sc.add_argument(
        "--answer-match", choices=("exact", "contains"), default="exact", help="r_acc matching mode"
    )
    sc.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible base URL for open-ended items (…/v1)"
    )
    sc.add_argument("--judge-model", default=None, help="served judge model name")
    sc.add_argument("--judge-api-key", default=None)
    sc.add_argument("--judge-max-tokens", type=int, default=512)
    sc.add_argument("--rejudge", action="store_true", help="ask the judge again for already graded items")
    out = p.add_argument_group("output")
    out.add_argument(
        "--output-dir", default="eval_results", help="predictions.jsonl and results.json go here"
    )
    out.add_argument(
        "--label", default=None, help="row label in the printed tables (default: the model path)"
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _judge(args: argparse.Namespace) -> Any:
    if args.judge_url is None:
        return None
    from mapo.rewards import JudgeClient

    kwargs: dict[str, Any] = {"api_key": args.judge_api_key, "max_tokens": args.judge_max_tokens}
    if args.judge_model:
        kwargs["model"] = args.judge_model
    return JudgeClient(args.judge_url, **kwargs)


def _items(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list:
    from mapo.eval.loaders import load_benchmark

    if not args.benchmark or len(args.benchmark) != len(args.data):
        parser.error("give one --data FILE per --benchmark NAME (or --predictions FILE to re-score)")
    roots = args.audio_root
    if len(roots) not in (0, 1, len(args.benchmark)):
        parser.error("give one --audio-root for all benchmarks or one per --benchmark")
    items = []
    for i, (name, path) in enumerate(zip(args.benchmark, args.data)):
        root = roots[i] if len(roots) > 1 else (roots[0] if roots else None)
        items.extend(load_benchmark(name, path, root, limit=args.limit))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # torch / transformers only after the arguments parsed: `mapo eval --help` answers at once
    from mapo.eval.report import print_summary, write_results
    from mapo.eval.runner import (
        GenerationSettings,
        generate_predictions,
        load_model_and_processor,
        read_predictions,
        write_predictions,
    )
    from mapo.eval.scoring import score_predictions, summarize

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.predictions:
        if args.benchmark or args.model:
            parser.error(
                "--predictions re-scores saved predictions; do not combine it with --benchmark/--model"
            )
        preds = [p for path in args.predictions for p in read_predictions(path)]
        label = args.label or os.path.basename(args.predictions[0])
    else:
        if not args.model:
            parser.error("--model is required to generate (or pass --predictions FILE to re-score)")
        items = _items(args, parser)
        model, processor = load_model_and_processor(
            args.model, args.adapter, args.processor, args.dtype, args.device
        )
        settings = GenerationSettings(
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.sample,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            system_prompt=args.system_prompt,
        )
        preds = generate_predictions(model, processor, items, settings, progress=not args.quiet)
        label = args.label or (args.adapter or args.model)
    preds = score_predictions(preds, _judge(args), answer_match=args.answer_match, rejudge=args.rejudge)
    summary = summarize(preds)
    os.makedirs(args.output_dir, exist_ok=True)
    pred_path = os.path.join(args.output_dir, "predictions.jsonl")
    write_predictions(preds, pred_path)
    write_results(
        summary,
        os.path.join(args.output_dir, "results.json"),
        label=label,
        overall="micro-average over scored items: sum of item scores / number of scored items",
        answer_match=args.answer_match,
        predictions=os.path.abspath(pred_path),
    )
    print_summary(summary, label)
    print(f"predictions: {pred_path}\nresults:     {os.path.join(args.output_dir, 'results.json')}")
    return 0
