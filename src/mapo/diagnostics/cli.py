"""``mapo diagnose``: trajectories, evidence masking (ACS), POS entropy, linear probes, modality gap.

Every subcommand reads benchmark items with the eval loaders (``--benchmark NAME --data FILE``), loads the model
like ``mapo eval`` (base, or ``--adapter`` merged) and writes PNG + JSON into ``--output-dir``::

    mapo diagnose trajectory --benchmark mmau --data mmau-test-mini.json --model M --limit 4 --output-dir diag/
    mapo diagnose evidence   --benchmark mmau --data mmau-test-mini.json --model M --ratios 0.05 0.1 0.3 0.5
    mapo diagnose pos        --benchmark mmau --data mmau-test-mini.json --model M --tagger nltk --limit 50
    mapo diagnose linear-probe --benchmark mmau --data mmau-test-mini.json --model M --label-field task
    mapo diagnose gap        --benchmark mmau --data mmau-test-mini.json --model M --layers 0 8 16 24 28
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--benchmark", required=True, help="mmau | mmar | mmsu | mmau-pro (item format, see docs/eval.md)"
    )
    p.add_argument("--data", required=True, help="the benchmark's metadata file")
    p.add_argument("--audio-root", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N items")
    p.add_argument("--model", required=True, help="base model path or hub id (or a LoRA adapter folder)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder, merged into the model")
    p.add_argument("--processor", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--output-dir", default="diagnostics")
    p.add_argument("--quiet", action="store_true")


def _signal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target-layers", type=int, nargs="+", default=None, help="decoder layers (default: last five)"
    )
    p.add_argument(
        "--temperature", type=float, default=1.0, help="entropies of softmax(logits / temperature)"
    )
    p.add_argument(
        "--reference",
        choices=("auto", "self", "base"),
        default="auto",
        help="text-only reference: the model itself, or the base model (auto: base when --adapter is given)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapo diagnose", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    traj = sub.add_parser(
        "trajectory", help="audio attention mass and Δh along generated reasoning (Fig. 2/6)"
    )
    _common(traj)
    _signal_args(traj)
    pos = sub.add_parser("pos", help="mean text-only entropy and Δh per POS tag (appendix E, Fig. 7)")
    _common(pos)
    _signal_args(pos)
    pos.add_argument("--tagger", default="lexicon", help="lexicon | nltk")
    ev = sub.add_parser("evidence", help="evidence masking and ACS (appendix C.4, Table 4)")
    _common(ev)
    ev.add_argument("--target-layers", type=int, nargs="+", default=None)
    ev.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.10, 0.30, 0.50])
    ev.add_argument("--n-random", type=int, default=1, help="random masks per item and ratio")
    ev.add_argument("--region-tokens", type=int, default=1, help="audio tokens per masking region")
    ev.add_argument("--domain", choices=("waveform", "features"), default="waveform")
    ev.add_argument("--head-reduce", choices=("mean", "max"), default="mean")
    ev.add_argument("--answer-match", choices=("exact", "contains"), default="exact")
    ev.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser(
        "linear-probe",
        aliases=["probe"],  # the 0.1 name; "probe" is the audio attention probe everywhere else
        help="linear probe of an item attribute from hidden states, per layer",
    )
    _common(pr)
    pr.add_argument(
        "--label-field", required=True, help="'group' or a field of the item's metadata (e.g. task)"
    )
    pr.add_argument("--layers", type=int, nargs="+", default=None, help="hidden-state indices (default: all)")
    pr.add_argument("--pool", default="audio", help="audio | last | <token position>")
    pr.add_argument("--test-fraction", type=float, default=0.3)
    pr.add_argument("--steps", type=int, default=200)
    pr.add_argument("--seed", type=int, default=0)
    gap = sub.add_parser("gap", help="modality gap between audio- and text-token hidden states, per layer")
    _common(gap)
    gap.add_argument(
        "--layers", type=int, nargs="+", default=None, help="hidden-state indices (default: all)"
    )
    gap.add_argument("--k", type=int, default=8, help="PCA subspace dimension of the principal angles")
    gap.add_argument("--max-tokens-per-row", type=int, default=64)
    return parser


def _load(args: argparse.Namespace):
    from mapo.eval.loaders import load_benchmark
    from mapo.eval.runner import GenerationSettings, load_model_and_processor

    items = load_benchmark(args.benchmark, args.data, args.audio_root, limit=args.limit)
    model, processor = load_model_and_processor(
        args.model, args.adapter, args.processor, args.dtype, args.device
    )
    settings = GenerationSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    return items, model, processor, settings


def _hidden_state_layers(args: argparse.Namespace, model: Any) -> list[int]:
    """``--layers``, or every hidden-state index (0 = embeddings, then one per decoder layer)."""
    if args.layers is not None:
        return args.layers
    return list(range(model.config.get_text_config().num_hidden_layers + 1))


def _reference(args: argparse.Namespace, model: Any) -> Any:
    """The text-only reference: ``None`` (the model itself) or the base model of an adapter, loaded unmerged."""
    adapter_dir = args.adapter
    base = args.model
    config_path = os.path.join(args.model, "adapter_config.json")
    if adapter_dir is None and os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as fh:
            adapter_dir, base = args.model, json.load(fh).get("base_model_name_or_path")
    if args.reference == "self" or (args.reference == "auto" and adapter_dir is None):
        return None
    if adapter_dir is None:  # --reference base without an adapter: the model is its own base
        return None
    from mapo.eval.runner import load_model_and_processor

    ref, _ = load_model_and_processor(base, None, args.processor, args.dtype, args.device)
    return ref


def compute_trajectories(args: argparse.Namespace, items, model, processor, settings) -> list:
    """Generate for the single-clip items and re-score each completion teacher-forced (one row at a time)."""
    from tqdm.auto import tqdm

    from mapo.diagnostics.signals import split_rows, teacher_forced_signals
    from mapo.diagnostics.trajectory import trajectories_from_signals
    from mapo.eval.runner import encode_prompts, generate_batch

    several = sum(1 for it in items if len(it.audio) != 1)
    if several:
        logger.warning(
            "%d item(s) with several audio clips are skipped (one clip per row is needed)", several
        )
    items = [it for it in items if len(it.audio) == 1]
    reference = _reference(args, model)
    out = []
    bar = tqdm(total=len(items), desc="trajectories", unit="item", disable=args.quiet)
    for start in range(0, len(items), settings.batch_size):
        batch = encode_prompts(model, processor, items[start : start + settings.batch_size], settings)
        ids, mask = generate_batch(model, processor, batch, settings)
        for it, (row, cid, cm) in zip(batch.items, split_rows(batch.inputs, ids, mask)):
            sig = teacher_forced_signals(
                model,
                row,
                cid,
                cm,
                tokenizer=processor.tokenizer,
                target_layers=args.target_layers,
                temperature=args.temperature,
                reference_model=reference,
            )
            out.extend(trajectories_from_signals(sig, processor.tokenizer, [it.id]))
        bar.update(len(batch.items))
    bar.close()
    return out


def _labels(items, field: str) -> list:
    values = [it.group if field == "group" else it.meta.get(field) for it in items]
    missing = [it.id for it, v in zip(items, values) if v is None]
    if missing:
        raise ValueError(
            f"--label-field {field!r}: items {missing[:3]} have no such field (fields: {sorted(items[0].meta)})"
        )
    return values


def _hidden_runs(args, items, model, processor, settings, fn) -> dict:
    """Run ``fn(batch_inputs) -> {layer: value}`` over the items in batches; concatenate the values per layer."""
    from mapo.eval.runner import encode_prompts

    collected: dict[int, list] = {}
    for start in range(0, len(items), settings.batch_size):
        batch = encode_prompts(model, processor, items[start : start + settings.batch_size], settings)
        for layer, value in fn(batch.inputs).items():
            collected.setdefault(layer, []).append(value)
    return collected


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    if args.command == "probe":
        print("mapo diagnose: 'probe' is now 'linear-probe' (the old name goes away in 0.3)", file=sys.stderr)
        args.command = "linear-probe"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    items, model, processor, settings = _load(args)
    out_dir = args.output_dir
    os.makedirs(out_dir, exist_ok=True)
    written: dict[str, Any] = {}
    if args.command in ("trajectory", "pos"):
        from mapo.diagnostics.trajectory import write_trajectories

        trajs = compute_trajectories(args, items, model, processor, settings)
        written["trajectories"] = write_trajectories(trajs, out_dir)["figures"]
        if args.command == "pos":
            from mapo.diagnostics.pos_entropy import plot_pos_entropy, pos_entropy_summary

            written["pos"] = plot_pos_entropy(
                pos_entropy_summary(trajs, processor.tokenizer, args.tagger), out_dir
            )
    elif args.command == "evidence":
        from mapo.diagnostics.evidence import evidence_masking, plot_acs

        result = evidence_masking(
            model,
            processor,
            items,
            args.ratios,
            settings=settings,
            n_random=args.n_random,
            region_tokens=args.region_tokens,
            domain=args.domain,
            target_layers=args.target_layers,
            head_reduce=args.head_reduce,
            answer_match=args.answer_match,
            seed=args.seed,
            progress=not args.quiet,
        )
        written["evidence"] = plot_acs(result, out_dir)
        _print_acs(result)
    elif args.command == "linear-probe":
        from mapo.diagnostics.linear_probes import linear_probe_layers, plot_linear_probes, pooled_features

        pool = int(args.pool) if args.pool.lstrip("-").isdigit() else args.pool
        layers = _hidden_state_layers(args, model)
        feats = _hidden_runs(
            args,
            items,
            model,
            processor,
            settings,
            lambda inputs: pooled_features(model, inputs, layers, pool, tokenizer=processor.tokenizer),
        )
        features = {layer: torch.cat(v).cpu() for layer, v in feats.items()}
        results = linear_probe_layers(
            features,
            _labels(items, args.label_field),
            test_fraction=args.test_fraction,
            steps=args.steps,
            seed=args.seed,
        )
        written["linear_probe"] = plot_linear_probes(results, out_dir, args.label_field)
    elif args.command == "gap":
        from mapo.diagnostics.modality_gap import modality_gap_by_layer, modality_states, plot_modality_gap

        layers = _hidden_state_layers(args, model)
        states = _hidden_runs(
            args,
            items,
            model,
            processor,
            settings,
            lambda inputs: modality_states(
                model,
                inputs,
                layers,
                tokenizer=processor.tokenizer,
                max_tokens_per_row=args.max_tokens_per_row,
            ),
        )
        merged = {
            layer: (torch.cat([a for a, _ in v]), torch.cat([t for _, t in v])) for layer, v in states.items()
        }
        written["gap"] = plot_modality_gap(modality_gap_by_layer(merged, args.k), out_dir)
    with open(
        os.path.join(out_dir, f"{args.command.replace('-', '_')}_outputs.json"), "w", encoding="utf-8"
    ) as fh:
        json.dump(written, fh, indent=2)
    print(json.dumps(written, indent=2))
    return 0


def _print_acs(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Evidence masking (unmasked accuracy {result['unmasked_accuracy']:.3f})")
    for col in ("Mask ratio", "Top-mask acc.", "Random-mask acc.", "Low-mask acc.", "ACS"):
        table.add_column(col, justify="right")
    for row in result["table"]:
        table.add_row(
            f"{100 * row['ratio']:.0f}%", *(f"{row[k]:.3f}" for k in ("top", "random", "low", "acs"))
        )
    Console().print(table)
