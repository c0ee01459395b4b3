"""``mapo eval``: generate and score on local benchmark files, or re-score a predictions file.

Examples::

    mapo eval --benchmark mmau --data MMAU/mmau-test-mini.json --model Qwen/Qwen2-Audio-7B-Instruct \\
        --adapter runs/mapo/checkpoint-500 --output-dir results/mapo
    mapo eval --benchmark mmau --data mmau.json --benchmark mmar --data MMAR/MMAR-meta.jsonl --model ...
    mapo eval --predictions results/mapo/predictions.jsonl --scorer official --output-dir results/mapo-official

An interrupted run continues where it stopped when rerun with the same --output-dir (predictions are appended
per batch); a folder holding another run's predictions is refused unless --overwrite.
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
        "--scorer",
        choices=("strict", "official"),
        default="strict",
        help="strict: the accuracy reward's rules (default); official: each benchmark's published rule",
    )
    sc.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible base URL for open-ended items (…/v1)"
    )
    sc.add_argument("--judge-model", default=None, help="served judge model name")
    sc.add_argument("--judge-api-key", default=None)
    sc.add_argument("--judge-max-tokens", type=int, default=512)
    sc.add_argument("--rejudge", action="store_true", help="ask the judge again for already graded items")
    gen.add_argument(
        "--ablate-audio",
        choices=("silence", "noise", "drop"),
        default=None,
        help="also generate with the audio replaced (silence / noise of the clip's RMS / no audio part) and report "
        "per category the accuracy with and without it (ablation.json)",
    )
    gen.add_argument(
        "--long-audio",
        choices=("error", "truncate", "chunk"),
        default="truncate",
        help="clips longer than the model keeps (30 s for the Qwen families): truncate (default, counted), "
        "chunk (several audio parts) or error (the item is unscored)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--output-dir", default="eval_results", help="predictions.jsonl and results.json go here"
    )
    out.add_argument(
        "--label", default=None, help="row label in the printed tables (default: the model path)"
    )
    out.add_argument(
        "--export-official",
        metavar="DIR",
        default=None,
        help="also write each benchmark's official input file into DIR (MMAU, MMAR: JSON with model_output / "
        "model_prediction; MMSU: JSONL with response; MMAU-Pro: parquet with model_output; docs/eval.md)",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue the run whose predictions are in --output-dir (default; refused if they are another run's)",
    )
    out.add_argument(
        "--overwrite", action="store_true", help="replace the predictions already in --output-dir"
    )
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


def _run_record(args: argparse.Namespace) -> dict[str, Any]:
    """What identifies a run for resuming (the output folder's ``run.json``)."""
    return {
        "model": args.model,
        "adapter": args.adapter,
        "benchmarks": list(args.benchmark),
        "data": [os.path.abspath(d) for d in args.data],
        "limit": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "sample": args.sample,
        "system_prompt": args.system_prompt,
        "long_audio": args.long_audio,
    }


def _official_rules(summary: dict[str, Any]) -> dict[str, str]:
    from mapo.eval.official import OFFICIAL_RULES

    return {bench: OFFICIAL_RULES.get(bench, "MMAU evaluation.py string_match") for bench in summary}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # torch / transformers only after the arguments parsed: `mapo eval --help` answers at once
    from mapo.eval.report import print_summary, write_results
    from mapo.eval.runner import (
        GenerationSettings,
        clip_reader,
        generate_predictions,
        load_model_and_processor,
        read_predictions,
        write_predictions,
    )
    from mapo.eval.scoring import score_predictions, summarize
    from mapo.eval.store import PREDICTIONS, PredictionStore

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pred_path = os.path.join(args.output_dir, PREDICTIONS)
    long_audio = None
    if args.predictions:
        if args.benchmark or args.model or args.ablate_audio:
            parser.error(
                "--predictions re-scores saved predictions; do not combine it with --benchmark/--model/"
                "--ablate-audio"
            )
        same = any(os.path.abspath(p) == os.path.abspath(pred_path) for p in args.predictions)
        if os.path.exists(pred_path) and not same and not args.overwrite:
            parser.error(f"{pred_path} exists; choose another --output-dir or pass --overwrite to replace it")
        preds = [p for path in args.predictions for p in read_predictions(path)]
        label = args.label or os.path.basename(args.predictions[0])
        items = model = processor = settings = None
    else:
        if not args.model:
            parser.error("--model is required to generate (or pass --predictions FILE to re-score)")
        items = _items(args, parser)
        store = PredictionStore(
            args.output_dir, _run_record(args), resume=args.resume, overwrite=args.overwrite
        )
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
        reader = clip_reader(model, processor, args.long_audio)
        preds = generate_predictions(
            model, processor, items, settings, progress=not args.quiet, reader=reader, store=store
        )
        long_audio = reader.counter
        label = args.label or (args.adapter or args.model)
    preds = score_predictions(
        preds, _judge(args), answer_match=args.answer_match, rejudge=args.rejudge, scorer=args.scorer
    )
    summary = summarize(preds)
    write_predictions(preds, pred_path)  # the scored file (the run appended unscored predictions per batch)
    write_results(
        summary,
        os.path.join(args.output_dir, "results.json"),
        label=label,
        overall="micro-average over scored items: sum of item scores / number of scored items",
        scorer=args.scorer,
        answer_match=args.answer_match,
        official_rules=_official_rules(summary) if args.scorer == "official" else None,
        long_audio=long_audio.as_dict() if long_audio is not None else None,
        predictions=os.path.abspath(pred_path),
    )
    if args.export_official:
        from mapo.eval.official import export_official

        for bench, path in export_official(preds, args.export_official).items():
            print(f"official input file ({bench}): {path}")
    print_summary(summary, label)
    unscored = sum(1 for p in preds if p.score is None)
    print(
        f"scorer: {args.scorer}"
        + (f" (answer match: {args.answer_match})" if args.scorer == "strict" else "")
    )
    print(f"unscorable: {unscored} of {len(preds)} items" + _reasons(preds))
    if long_audio is not None:
        print(long_audio.summary())
    print(f"predictions: {pred_path}\nresults:     {os.path.join(args.output_dir, 'results.json')}")
    if args.ablate_audio:
        _ablation(args, items, model, processor, settings, preds)
    return 0


def _ablation(args: argparse.Namespace, items, model, processor, settings, preds) -> None:
    """Generate again with the audio replaced, into ``OUTPUT/ablate-MODE/``; write and print the report."""
    from mapo.eval.ablation import ablate_clips, ablation_report, print_ablation
    from mapo.eval.runner import clip_reader, generate_predictions, write_predictions
    from mapo.eval.scoring import score_predictions
    from mapo.eval.store import PREDICTIONS, PredictionStore, write_json

    mode = args.ablate_audio
    sub = os.path.join(args.output_dir, f"ablate-{mode}")
    store = PredictionStore(
        sub, {**_run_record(args), "ablate_audio": mode}, resume=args.resume, overwrite=args.overwrite
    )
    ablated = generate_predictions(
        model,
        processor,
        items,
        settings,
        progress=not args.quiet,
        reader=clip_reader(model, processor, args.long_audio),
        store=store,
        transform_clips=ablate_clips(mode, args.seed),
    )
    ablated = score_predictions(ablated, None, answer_match=args.answer_match, scorer=args.scorer)
    write_predictions(ablated, os.path.join(sub, PREDICTIONS))
    report = ablation_report(preds, ablated)
    path = os.path.join(args.output_dir, "ablation.json")
    write_json({"ablate_audio": mode, "scorer": args.scorer, "report": report}, path, indent=2)
    print_ablation(report, mode)
    print(f"ablation:    {path}")


def _reasons(preds: list) -> str:
    from collections import Counter

    counts = Counter(p.reason.split(":", 1)[0] for p in preds if p.score is None)
    return "" if not counts else " (" + ", ".join(f"{k} ×{v}" for k, v in counts.most_common()) + ")"
