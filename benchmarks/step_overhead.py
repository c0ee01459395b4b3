"""Wall time and peak memory of a MAPO training step vs an AudioGRPO step (same model, batch and settings).

Each variant runs in a fresh subprocess (so peak memory is its own): a random Qwen2-Audio built from a config,
G completions of one prompt per step, TRL's own ``step_time`` metric (generation + scoring + loss + backward +
optimizer) averaged over the measured steps after one warm-up step. Ratios are to AudioGRPO, measured side by side
in one run. Target (README, Benchmarks): MAPO ≤ 1.10× time and ≤ 1.05× memory.

    python benchmarks/step_overhead.py                 # CPU, a ~30M-parameter model (a few minutes on 2 cores)
    python benchmarks/step_overhead.py --device cuda --preset gpu   # users with a GPU

Memory: on CPU the peak resident-set growth during training (``ru_maxrss`` minus the RSS before the first step);
on CUDA ``torch.cuda.max_memory_allocated`` over the measured steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

PRESETS = {
    # hidden, layers, heads, kv heads, vocab, audio seconds, completion tokens, G
    "cpu": dict(hidden=384, layers=8, heads=6, kv_heads=2, vocab=4096, seconds=2, completion=64, g=8),
    "gpu": dict(hidden=1536, layers=28, heads=12, kv_heads=2, vocab=151936, seconds=30, completion=512, g=8),
}
VARIANTS = {
    "grpo": "AudioGRPOTrainer (GRPO baseline)",
    "mapo": "MAPOTrainer (mask + attention branch)",
    "mask_only": "MAPOTrainer, eta=0 (mask only)",
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(variant: str, preset: str, device: str, steps: int) -> dict:
    import torch
    from datasets import Dataset

    from mapo.rewards import accuracy_reward, format_reward
    from mapo.testing import sine_clip, tiny_qwen2_audio, tiny_qwen2_audio_processor
    from mapo.trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer

    p = PRESETS[preset]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    processor = tiny_qwen2_audio_processor(chunk_seconds=p["seconds"])
    model = tiny_qwen2_audio(
        vocab_size=p["vocab"],
        hidden_size=p["hidden"],
        num_layers=p["layers"],
        num_heads=p["heads"],
        num_kv_heads=p["kv_heads"],
        max_source_positions=50 * p["seconds"],
        tokenizer=processor.tokenizer,
        seed=0,
    ).to(device)

    def varied(completions, **kw):  # a reward that varies inside a group, so the PG term is not 0
        return [float(len(c[-1]["content"]) % 3) for c in completions]

    rows = [
        {
            "audio": sine_clip(200.0 + 40 * i, p["seconds"]).tolist(),
            "question": "Low or high?",
            "choices": ["low", "high"],
            "answer": "low",
        }
        for i in range(steps + 1)
    ]
    args = MAPOConfig(
        output_dir=tempfile.mkdtemp(prefix="mapo-step-overhead-"),
        per_device_train_batch_size=p["g"],
        num_generations=p["g"],
        max_completion_length=p["completion"],
        max_steps=steps + 1,
        logging_steps=1,
        report_to=[],
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        gradient_checkpointing=False,
        pos_tagger="lexicon",
        save_strategy="no",
        beta=0.0,
        seed=0,
        eta=0.0 if variant == "mask_only" else 0.1,
        shuffle_dataset=False,
    )
    cls = AudioGRPOTrainer if variant == "grpo" else MAPOTrainer
    trainer = cls(
        model=model,
        reward_funcs=[accuracy_reward, format_reward, varied],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
    )
    rss_before = _rss_bytes()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    step_times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]  # drop warm-up
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return {
        "variant": variant,
        "step_time": sum(step_times) / len(step_times),
        "wall": wall,
        "peak_memory_bytes": peak,
        "parameters": sum(x.numel() for x in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after one warm-up step)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
    if args.variant:
        print(json.dumps(run_variant(args.variant, preset, args.device, args.steps)))
        return

    results = {}
    for variant in VARIANTS:
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--device",
            args.device,
            "--preset",
            preset,
            "--steps",
            str(args.steps),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit(f"variant {variant} failed")
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])

    base = results["grpo"]
    p = PRESETS[preset]
    print(
        f"command: python benchmarks/step_overhead.py --device {args.device} --preset {preset} --steps {args.steps}"
    )
    print(
        f"model: random Qwen2-Audio, {base['parameters'] / 1e6:.1f}M parameters (hidden {p['hidden']}, "
        f"{p['layers']} layers); G={p['g']} completions of {p['completion']} tokens, {p['seconds']} s audio; "
        f"device {args.device}"
    )
    mem_label = "peak RSS growth" if args.device == "cpu" else "max_memory_allocated"
    print(f"{'variant':44s} {'step time':>10s} {'ratio':>7s} {mem_label:>18s} {'ratio':>7s}")
    for variant, label in VARIANTS.items():
        r = results[variant]
        print(
            f"{label:44s} {r['step_time']:9.2f}s {r['step_time'] / base['step_time']:6.3f}x "
            f"{r['peak_memory_bytes'] / 2**20:15.0f} MiB {r['peak_memory_bytes'] / base['peak_memory_bytes']:6.3f}x"
        )
    print("target: MAPO <= 1.10x time and <= 1.05x memory of AudioGRPO")


if __name__ == "__main__":
    main()
