"""One RL arm of the demo on chosen seeds, with MAPO hyper-parameter overrides: the tuning tool of docs/synthetic.md.

    python benchmarks/demo_arm_sweep.py --arm grpo --seeds 100 102 103 104 --out grpo.json
    python benchmarks/demo_arm_sweep.py --arm mapo --kappa 2 --seeds 100 102 103 104 --out kappa2.json
    python benchmarks/demo_arm_sweep.py --arm grpo --beta 0.08 --seeds 100 102 --out grpo_beta08.json

Uses the demo's default budget, its warm-up cache and 2 torch threads (the demo's setting, so the numbers are those a
full ``mapo demo --first-seed K`` run would give for that arm). Prints and writes, per seed, the base's and the arm's
final metrics. Tune on seeds ≥ 100 only: seeds 0–4 are the README's report seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from dataclasses import replace

KEYS = (
    "prior/answer_acc",
    "prior/format_ok",
    "trap/format_ok",
    "trap/answer_acc",
    "trap/late_note_acc",
    "trap/late_follow_prior",
    "trap/attn_early",
    "trap/attn_late",
    "trap/attn_ratio",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", default="mapo", choices=["grpo", "mask_only", "mapo"])
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--eta", type=float, default=None, help="η of the MAPO arm (default: the demo's)")
    ap.add_argument(
        "--beta", type=float, default=None, help="β, the KL anchor of every arm (default: the demo's)"
    )
    ap.add_argument("--kappa", type=float, default=None, help="κ of the temporal weight, eq. 4 (default: 1)")
    ap.add_argument("--out", default=None, help="write the per-seed metrics to this JSON file")
    args = ap.parse_args(argv)
    if any(s < 100 for s in args.seeds):
        print("note: seeds < 100 include the README's report seeds; tune on seeds >= 100")

    import torch

    from mapo.synthetic import rl
    from mapo.synthetic.cache import warm_up_cached
    from mapo.synthetic.evaluate import evaluate
    from mapo.synthetic.model import build_tiny_audio_lm
    from mapo.synthetic.task import make_task
    from mapo.synthetic.warmup import TASK_SIZES

    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the demo's thread count: same numbers as the demo
    budget = rl.RL_BUDGETS["default"]
    if args.eta is not None:
        budget = replace(budget, eta=args.eta)
    if args.beta is not None:
        budget = replace(budget, beta=args.beta)
    label, trainer_cls, overrides = rl.ARMS[args.arm]
    if args.kappa is not None:
        rl.ARMS[args.arm] = (label, trainer_cls, {**overrides, "kappa": args.kappa})
    n_train, n_eval = TASK_SIZES["default"]
    out: dict[str, dict] = {}
    for seed in args.seeds:
        task = make_task(seed=seed, n_train=n_train, n_eval=n_eval, n_rl=512)
        model, processor = build_tiny_audio_lm(seed=seed)
        warm_up_cached(model, processor, task, "default", seed)
        model.eval()
        rows = list(task.prior) + list(task.trap)
        base = evaluate(model, processor, rows)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = rl.run_arm(args.arm, model, processor, task, budget, seed, tmp, rows, progress=False)
        out[str(seed)] = {
            "base": {k: base[k] for k in KEYS},
            args.arm: {k: result.metrics[k] for k in KEYS},
            "seconds": time.perf_counter() - t0,
        }
        print(seed, json.dumps(out[str(seed)]), flush=True)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(
                    {
                        "arm": args.arm,
                        "eta": budget.eta,
                        "beta": budget.beta,
                        "kappa": args.kappa,
                        "per_seed": out,
                    },
                    fh,
                    indent=1,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
