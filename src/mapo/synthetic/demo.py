"""``mapo demo``: watch late-stage modality collapse appear in a tiny audio LM, then GRPO vs MAPO on CPU.

Per seed: build the tone-melody task (a language-prior trap; ``mapo.synthetic.task``), build a random
``Qwen2AudioForConditionalGeneration`` offline, warm it up the way real audio LMs are built until it collapses
(``mapo.synthetic.warmup``; cached per seed, budget and code version, ``mapo.synthetic.cache``), evaluate it, then
train three arms from it with the paper's rewards (accuracy, format, offline consistency; λ 2/1/1) and the library's
real trainers — GRPO (``AudioGRPOTrainer``), MAPO mask only (η = 0) and MAPO (``MAPOTrainer``) — and evaluate each.
Prints a table (mean ± std over seeds) and sentences computed from it, writes ``results.json`` (with the issue's
criteria per seed and the paired MAPO − GRPO comparison) and PNG plots (``summary.png`` first), and says where.

    mapo demo                              # one seed, default budget (about 6 min on 2 idle cores)
    mapo demo --quick                      # small budgets (what CI runs)
    mapo demo --seeds 3 --first-seed 200   # seeds 200-202, mean ± std
    mapo demo --no-cache                   # redo the warm-up
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the demo imports its stages lazily, so the CLI starts without torch
    from .warmup import WarmupReport

__all__ = ["main", "run_demo"]


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)


def _window_sentence(report: WarmupReport) -> str:
    """Where the warm-up's SFT stopped (:mod:`mapo.synthetic.collapse_window`), for the console."""
    if report.sft_kept_step is None:
        return "  [yellow]no SFT checkpoint was inside the collapse window: the base may not be collapsed[/yellow]"
    attempt = report.sft_checks[-1]["attempt"]
    return (
        f"  SFT kept at step {report.sft_kept_step} of {report.budget['sft_steps']}"
        + (f" (attempt {attempt + 1})" if attempt else "")
        + ": the last validation checkpoint inside the collapse window"
    )


def run_demo(
    quick: bool = False,
    seeds: int = 1,
    output_dir: str = "mapo-demo-output",
    arms: tuple[str, ...] = ("grpo", "mask_only", "mapo"),
    rl_steps: int | None = None,
    progress: bool = True,
    first_seed: int = 0,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Run the demo and return the ``results.json`` payload (see module docstring)."""
    import torch
    from rich.console import Console

    from .cache import warm_up_cached
    from .evaluate import evaluate
    from .model import build_tiny_audio_lm
    from .report import (
        aggregate,
        check_criteria,
        comparison,
        format_table,
        interpretation,
        plot_all,
        write_results,
    )
    from .rl import ARMS, RL_BUDGETS, RLBudget, run_arm
    from .task import make_task
    from .warmup import TASK_SIZES

    console = Console() if progress else None
    budget = "quick" if quick else "default"
    rl_budget = RL_BUDGETS[budget]
    if rl_steps is not None:
        rl_budget = RLBudget(**{**asdict(rl_budget), "steps": rl_steps})
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {sorted(ARMS)}")
    os.makedirs(output_dir, exist_ok=True)
    # TRL 1.16 reads `model.is_gradient_checkpointing`, which transformers 5.23 deprecates in favour of
    # `is_activation_checkpointing`: a warning the user can do nothing about, filtered here only (the trainers are
    # configured with the non-deprecated `activation_checkpointing`).
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
    torch.set_num_threads(
        min(2, os.cpu_count() or 1)
    )  # results are deterministic per seed *and* thread count
    n_train, n_eval = TASK_SIZES[budget]
    started = time.perf_counter()
    per_seed, timings, trajectories, processor = [], [], {}, None

    for seed in range(first_seed, first_seed + seeds):
        _say(console, f"\n[bold]seed {seed}[/bold] — task, model, warm-up ({budget} budget)")
        t0 = time.perf_counter()
        task = make_task(seed=seed, n_train=n_train, n_eval=n_eval, n_rl=512)
        model, processor = build_tiny_audio_lm(seed=seed)
        report, cached = warm_up_cached(model, processor, task, budget, seed, use_cache, progress)
        if cached:
            _say(console, "  warm-up loaded from the cache (--no-cache to redo it)")
        if report.sft_checks:
            _say(console, _window_sentence(report))
        model.eval()
        eval_rows = list(task.prior) + list(task.trap)
        base_metrics = evaluate(model, processor, eval_rows, return_records=True)
        base_records = base_metrics.pop("records")
        warmup_info = {
            "steps_run": report.steps_run,
            "sft_kept_step": report.sft_kept_step,
            "sft_checks": report.sft_checks,
        }
        rows: dict[str, dict[str, Any]] = {
            "base": {"metrics": base_metrics, "curve": [], "warmup": warmup_info}
        }
        seed_times = {"warm_up": time.perf_counter() - t0, "warm_up_stages": report.seconds}
        _say(
            console,
            f"  base: trap acc {base_metrics['trap/answer_acc']:.2f}, in-prior {base_metrics['prior/answer_acc']:.2f}, "
            f"audio mass late/early {base_metrics['trap/attn_ratio']:.2f}",
        )
        arm_records = {}
        for arm in arms:
            _say(console, f"[bold]seed {seed}[/bold] — RL arm: {ARMS[arm][0]} ({rl_budget.steps} steps)")
            result = run_arm(
                arm,
                model,
                processor,
                task,
                rl_budget,
                seed,
                os.path.join(output_dir, "runs", f"seed{seed}-{arm}"),
                eval_rows,
                progress=progress,
            )
            rows[arm] = result.to_json()
            arm_records[arm] = result.records
            seed_times[arm] = result.seconds
            m = result.metrics
            _say(
                console,
                f"  {ARMS[arm][0]}: trap acc {m['trap/answer_acc']:.2f}, in-prior {m['prior/answer_acc']:.2f}, "
                f"audio mass late/early {m['trap/attn_ratio']:.2f}",
            )
        per_seed.append(rows)
        timings.append(seed_times)
        if seed == first_seed:  # one trap item, the same for every model, for the Fig. 2/6-style trajectory
            trap_id = next(r["row"]["id"] for r in base_records if r["row"]["trap"])
            trajectories = {
                name: next((r for r in recs if r["row"]["id"] == trap_id), None)
                for name, recs in {"base": base_records, **arm_records}.items()
            }

    summary = aggregate(per_seed)
    table = format_table(summary, seeds)
    sentences = interpretation(summary, per_seed)
    plots = plot_all(per_seed, trajectories, processor.tokenizer, output_dir)
    payload = {
        "command": "mapo demo"
        + (" --quick" if quick else "")
        + (f" --seeds {seeds}" if seeds > 1 else "")
        + (f" --first-seed {first_seed}" if first_seed else ""),
        "budget": budget,
        "seeds": seeds,
        "first_seed": first_seed,
        "torch_threads": torch.get_num_threads(),
        "rl_budget": asdict(rl_budget),
        "arms": {a: ARMS[a][0] for a in arms},
        "summary": summary,
        "per_seed": per_seed,
        "timings_seconds": timings,
        "total_seconds": time.perf_counter() - started,
        "table": table,
        "interpretation": sentences,
        "comparison": comparison(per_seed) if {"grpo", "mapo"} <= set(arms) else {},
        "criteria": check_criteria(per_seed, first_seed),
        "plots": [os.path.basename(p) for p in plots],
    }
    write_results(os.path.join(output_dir, "results.json"), payload)
    if console is not None:
        console.print(
            f"\n[bold]Results[/bold] ({seeds} seed{'s' if seeds > 1 else ''}, mean ± std; trap split "
            "unless marked; a_t = audio attention mass on note tokens)"
        )
        print(table, flush=True)  # plain print: a console would wrap the wide table
        console.print(
            "\nColumns: answer accuracy in-prior / on trap items; trap late-note acc = notes 5-6 of the chain "
            "right (chain faithfulness); 'late notes = prior' = share of late notes that continue the written "
            "pattern; a_t early/late = notes 1-2 / 5-6; Δh P=R@K = precision (= recall) of the top-|Δh| tokens "
            "as audio-dependent note tokens."
        )
        console.print("\n[bold]What it shows[/bold] (computed from the numbers above)")
        for sentence in sentences:
            console.print(f"• {sentence}")
        console.print(
            f"\nwrote {os.path.abspath(os.path.join(output_dir, 'results.json'))} and "
            f"{', '.join(os.path.basename(p) for p in plots)} in {os.path.abspath(output_dir)} "
            f"({payload['total_seconds']:.0f} s)"
        )
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mapo demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small budgets: ≤ 2 minutes on 2 cores (CI)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat over N seeds and report mean ± std")
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds K..K+N-1 (default 0)")
    parser.add_argument(
        "--no-cache", action="store_true", help="redo the warm-up even if a cached warmed-up model exists"
    )
    parser.add_argument("--output-dir", default="mapo-demo-output", help="where results.json and the PNGs go")
    parser.add_argument("--arms", nargs="+", default=["grpo", "mask_only", "mapo"], help="RL arms to run")
    parser.add_argument("--rl-steps", type=int, default=None, help="override the RL steps per arm")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or console output")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be ≥ 1")
    if args.first_seed < 0:
        parser.error("--first-seed must be ≥ 0")
    run_demo(
        quick=args.quick,
        seeds=args.seeds,
        output_dir=args.output_dir,
        arms=tuple(args.arms),
        rl_steps=args.rl_steps,
        progress=not args.no_progress,
        first_seed=args.first_seed,
        use_cache=not args.no_cache,
    )
    return 0
