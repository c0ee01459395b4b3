"""Does the warmed-up tiny audio LM show late-stage modality collapse? One line of figures per checkpoint.

    .venv/bin/python benchmarks/synthetic_collapse.py --budget default --seeds 0 1
    .venv/bin/python benchmarks/synthetic_collapse.py --budget quick --seeds 0 1 --prior 0.95 --eval-sft 50 100

Prints (and appends to ``--out`` as JSON lines) answer accuracy in-prior / trap, trap late-note accuracy, the share
of trap late notes that follow the prior, the late/early audio-mass ratio, Δh precision@K, and wall/CPU seconds.
Timings are only meaningful on an otherwise idle machine (2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from mapo.synthetic import BUDGETS, TASK_SIZES, ModelSize, build_tiny_audio_lm, evaluate, make_task, warm_up

KEYS = (
    "answer_acc",
    "late_note_acc",
    "late_follow_prior",
    "attn_ratio",
    "attn_token_ratio",
    "dh_precision_at_k",
)


def summary(res: dict) -> dict:
    out = {f"{s}/{k}": round(res[f"{s}/{k}"], 3) for s in ("prior", "trap") for k in KEYS}
    out["trap/note_acc"] = [round(x, 2) for x in res["trap/note_acc"]]
    out["trap/attn_profile"] = [round(x, 3) for x in res["trap/attn_note_profile"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="default", choices=sorted(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-train", type=int, default=None, help="default: TASK_SIZES[budget]")
    ap.add_argument("--n-eval", type=int, default=None, help="default: TASK_SIZES[budget]")
    ap.add_argument("--prior", type=float, default=None, help="p (default: the TaskConfig default)")
    ap.add_argument("--n-notes", type=int, default=None)
    ap.add_argument("--snr", type=float, nargs=2, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-sft", type=int, nargs="*", default=[], help="also evaluate after these SFT steps")
    ap.add_argument("--set", nargs="*", default=[], help="budget overrides, e.g. sft_steps=200 sft_lr=5e-4")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    args = ap.parse_args()
    args.n_train = TASK_SIZES[args.budget][0] if args.n_train is None else args.n_train
    args.n_eval = TASK_SIZES[args.budget][1] if args.n_eval is None else args.n_eval
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, value = item.split("=")
        overrides[key] = type(getattr(BUDGETS[args.budget], key))(float(value))
    budget = dataclasses.replace(BUDGETS[args.budget], **overrides)
    task_kw = {k: v for k, v in (("prior", args.prior), ("n_notes", args.n_notes)) if v is not None}
    if args.snr:
        task_kw["snr_db"] = tuple(args.snr)
    size_kw = {}
    if args.layers:
        size_kw["num_layers"] = args.layers
    if args.hidden:
        size_kw.update(hidden_size=args.hidden, intermediate_size=2 * args.hidden)
    for seed in args.seeds:
        line = run_one(seed, args, budget, task_kw, size_kw)
        print(json.dumps(line), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")


def run_one(seed: int, args, budget, task_kw: dict, size_kw: dict) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    task = make_task(seed, args.n_train, args.n_eval, **task_kw)
    model, processor = build_tiny_audio_lm(seed, size=ModelSize(**size_kw))
    t_task = time.perf_counter() - t0
    evals = {}

    def on_step(stage: str, step: int) -> None:
        if stage == "sft" and step in args.eval_sft and step != budget.sft_steps:
            evals[step] = summary(evaluate(model, processor, task.prior + task.trap))

    report = warm_up(model, processor, task, budget, seed=seed, progress=False, on_step=on_step)
    t_warm, c_warm = time.perf_counter() - t0, time.process_time() - c0
    res = evaluate(model, processor, task.prior + task.trap)
    return {
        "tag": args.tag,
        "seed": seed,
        "budget": dataclasses.asdict(budget),
        "task": {"n_train": args.n_train, "n_eval": args.n_eval, **task_kw},
        "size": size_kw,
        "seconds": {"task+model": round(t_task, 1), **{k: round(v, 1) for k, v in report.seconds.items()}},
        "warmup_wall": round(t_warm, 1),
        "warmup_cpu": round(c_warm, 1),
        "eval_wall": round(res["seconds"], 1),
        "loss": {k: round(v, 3) for k, v in report.final_loss.items()},
        "steps_run": report.steps_run,
        "sft_kept_step": report.sft_kept_step,  # collapse window (None: no check ran or none was inside)
        "sft_checks": report.sft_checks,
        "final": summary(res),
        "sft_checkpoints": evals,
    }


if __name__ == "__main__":
    main()
