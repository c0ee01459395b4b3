"""The demo over several seeds: the figures of the README's demo table, written to a committed JSON.

    python benchmarks/demo_seeds.py --seeds 5                      # seeds 0-4 -> benchmarks/results/demo_seeds.json
    python benchmarks/demo_seeds.py --seeds 3 --first-seed 200 --out /some/where.json   # a check on other seeds
    python benchmarks/demo_seeds.py --seeds 5 --check benchmarks/results/demo_seeds.json   # reproduce exactly

Runs ``mapo demo`` (default budget, every arm) on seeds K..K+N-1 and writes one JSON with two parts:

* ``results``: the numbers — per-arm mean/std (``summary``, the layout of the demo's ``results.json``), per-seed
  metrics of every arm, the paired MAPO − GRPO comparison, the issue's criteria per seed and the printed
  interpretation. Same seed + same machine + same torch thread count ⇒ the same bytes; ``--check`` compares them.
* ``run``: how and where it ran — date, command, CPU model and core count, torch threads, library versions,
  wall time. Not part of the comparison.

Other CPUs give other numbers: floating-point sums are not associative, so a different core count, thread count or
instruction set (AVX2 vs AVX-512 kernels) changes the rounding of every matrix product; the RL rollouts sample
from those probabilities, and a single flipped sample changes the rest of the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata

#: Per-seed metrics kept in the JSON (the demo's results.json has them all, plus logs and curves).
PER_SEED_KEYS = (
    "prior/answer_acc",
    "prior/format_ok",
    "trap/answer_acc",
    "trap/format_ok",
    "trap/early_note_acc",
    "trap/late_note_acc",
    "trap/late_follow_prior",
    "trap/attn_early",
    "trap/attn_late",
    "trap/attn_ratio",
    "trap/attn_note_profile",
    "trap/dh_precision_at_k",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def results_part(payload: dict) -> dict:
    """The reproducible numbers of a ``run_demo`` payload (no timings)."""
    per_seed = []
    for i, seed_rows in enumerate(payload["per_seed"]):
        per_seed.append(
            {
                "seed": payload["first_seed"] + i,
                **{arm: {k: row["metrics"].get(k) for k in PER_SEED_KEYS} for arm, row in seed_rows.items()},
            }
        )
    return {
        "seeds": list(range(payload["first_seed"], payload["first_seed"] + payload["seeds"])),
        "budget": payload["budget"],
        "rl_budget": payload["rl_budget"],
        "torch_threads": payload["torch_threads"],
        "summary": payload["summary"],
        "comparison": payload["comparison"],
        "criteria": payload["criteria"],
        "interpretation": payload["interpretation"],
        "table": payload["table"],
        "per_seed": per_seed,
    }


def markdown(data: dict) -> str:
    """The README's tables from a JSON this script wrote: mean ± std per arm, then the per-seed criteria."""
    res, run = data["results"], data["run"]
    lines = [
        f"{len(res['seeds'])} seeds ({res['seeds'][0]}–{res['seeds'][-1]}), {run['date']}, {run['cpu']}, "
        f"{run['cores']} cores, {res['torch_threads']} torch threads, `{run['command']}` "
        f"({run['wall_seconds'] / 60:.0f} min):",
        "",
        res["table"].replace("| model ", "| model ", 1),
        "",
        "| seed | base collapsed | in-prior kept (GRPO / mask / MAPO) | ≥ 95 % well-formed | MAPO late a_t ÷ GRPO "
        "| MAPO − GRPO late/early | MAPO − GRPO trap acc | MAPO − GRPO late-note acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cmp = res["comparison"].get("mapo_minus_grpo", {})
    yes = lambda b: "yes" if b else "**no**"  # noqa: E731
    for i, row in enumerate(res["criteria"]["per_seed"]):
        kept = " / ".join(yes(row.get(f"{a}_keeps_prior")) for a in ("grpo", "mask_only", "mapo"))
        formed = all(row.get(f"{a}_well_formed", True) for a in ("grpo", "mask_only", "mapo"))
        lines.append(
            f"| {row['seed']} | {yes(row['base_collapsed'])} | {kept} | {yes(formed)} | "
            f"{row['mapo_late_mass_x_grpo']:.2f}× {'' if row['mapo_late_mass_ok'] else '(**< 1.3**)'} | "
            f"{row['mapo_ratio_minus_grpo']:+.2f} {'' if row['mapo_ratio_ok'] else '(**< 0.15**)'} | "
            f"{cmp['trap/answer_acc']['per_seed'][i]:+.3f} | {cmp['trap/late_note_acc']['per_seed'][i]:+.3f} |"
        )
    for key, name in (
        ("trap/answer_acc", "trap answer accuracy"),
        ("trap/late_note_acc", "late-note accuracy"),
    ):
        d = cmp[key]
        lines.append("")
        lines.append(
            f"MAPO − GRPO, {name}: mean {d['mean']:+.3f}, std {d['std']:.3f}, standard error "
            f"{'n/a' if d['sem'] is None else format(d['sem'], '.3f')}, "
            f"{d['positive']}/{d['n']} seeds positive."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--quick", action="store_true", help="the quick budget (a smoke test, not the README figures)"
    )
    ap.add_argument("--out", default=None, help="default: benchmarks/results/demo_seeds[_first<K>].json")
    ap.add_argument("--demo-output", default=None, help="keep the demo's results.json and PNGs here")
    ap.add_argument("--no-cache", action="store_true", help="redo every warm-up")
    ap.add_argument("--check", default=None, help="compare the numbers with this JSON instead of writing one")
    ap.add_argument("--markdown", default=None, help="print the README tables of this JSON and exit (no run)")
    args = ap.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as fh:
            print(markdown(json.load(fh)))
        return 0

    from mapo.synthetic.demo import run_demo
    from mapo.synthetic.report import write_results

    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(
        here,
        "results",
        "demo_seeds.json" if args.first_seed == 0 else f"demo_seeds_first{args.first_seed}.json",
    )
    given = list(argv if argv is not None else sys.argv[1:])
    for opt in (
        "--demo-output",
        "--out",
    ):  # local paths stay out of the committed JSON; they change no number
        if opt in given:
            i = given.index(opt)
            del given[i : i + 2]
    command = " ".join(["python benchmarks/demo_seeds.py", *given])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        payload = run_demo(
            quick=args.quick,
            seeds=args.seeds,
            first_seed=args.first_seed,
            output_dir=args.demo_output or tmp,
            progress=True,
            use_cache=not args.no_cache,
        )
    results = json.loads(json.dumps(results_part(payload)))  # the JSON view (NaN -> null happens at write)
    if args.check:
        with open(args.check) as fh:
            committed = json.load(fh)["results"]
        with tempfile.NamedTemporaryFile("w+", suffix=".json") as fh:
            write_results(fh.name, results)
            fresh = json.load(open(fh.name))
        same = fresh == committed
        print(f"\nreproduced {args.check}: {'IDENTICAL' if same else 'DIFFERENT'}")
        if not same:
            for key in fresh:
                if fresh[key] != committed.get(key):
                    print(f"  differs: {key}")
        return 0 if same else 1
    import torch

    run = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("mapo-rl", "torch", "transformers", "trl", "numpy")},
        "wall_seconds": round(time.perf_counter() - start, 1),
        "timings_seconds": payload["timings_seconds"],
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_results(out, {"run": run, "results": results})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
