"""Cost of measuring the audio attention mass during one training step (forward + backward), relative to a plain step.

Variants (same model, same batch, same loss on the completion tokens):

* ``plain``  : cross-entropy on the completion tokens, SDPA attention (transformers ``"sdpa"``).
* ``probe``  : + mean of -log(a_t + 1e-6) with a_t from :func:`mapo.probe.audio_attention` (one extra SDPA call per
  target layer on the completion rows, values = audio indicator).
* ``naive``  : the same loss with a_t from the materialised fp32 softmax (:func:`mapo.probe.naive_audio_attention`).
* ``eager``  : the same loss with a_t from transformers' eager attention and ``output_attentions=True`` (what the
  public MAPO code and most users do).

Model: ``Qwen2ForCausalLM`` built from a config with random weights; a contiguous block of prompt positions is
marked as audio; odd rows are left-padded by 5 % of the sequence; target layers are the last five.

Time: median of ``--repeats`` steps after one warm-up step, the variants interleaved round-robin in one process (so
load from other processes hits them alike). CUDA: CUDA events. Memory: each variant in a fresh subprocess; CUDA:
``torch.cuda.max_memory_allocated`` minus the allocation before the step; CPU: the rise of the process's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs``) over the RSS before the step, with glibc's mmap threshold pinned
to 64 KiB (``mallopt``) so freed tensors go back to the OS instead of a malloc cache.

    python benchmarks/probe_overhead.py                 # CPU-sized default (about a minute)
    python benchmarks/probe_overhead.py --layers 28     # same widths at a real model's depth (about 2 minutes)
    python benchmarks/probe_overhead.py --preset gpu    # Qwen2-1.5B-like decoder, bf16, two shapes (needs a GPU)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("plain", "probe", "naive", "eager")
PRESETS = {
    # hidden, intermediate, layers, heads, kv heads, vocab; shapes: (batch, seq, audio tokens)
    "cpu": {
        "model": dict(
            hidden_size=192,
            intermediate_size=1152,  # 6x hidden, as Qwen2-1.5B (8960 / 1536)
            num_hidden_layers=6,
            num_attention_heads=3,  # head dim 64
            num_key_value_heads=1,
            vocab_size=4096,
        ),
        "shapes": [(2, 512, 160)],
        "prompt_text": 96,
        "dtype": "float32",
    },
    "tiny": {  # smoke runs only (benchmarks/gpu_check.py --device cpu --tiny): seconds, not a measurement
        "model": dict(
            hidden_size=64,
            intermediate_size=384,
            num_hidden_layers=6,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=512,
        ),
        "shapes": [(2, 128, 40)],
        "prompt_text": 24,
        "dtype": "float32",
    },
    "gpu": {
        "model": dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
        ),
        "shapes": [(4, 2000, 750), (1, 5550, 1500)],
        "prompt_text": 250,
        "dtype": "bfloat16",
    },
}
AUDIO_OFFSET = 16  # the audio block starts after a few prompt tokens


def build(preset: str, shape: tuple[int, int, int], device: torch.device, layers: int | None = None):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = PRESETS[preset]
    dtype = getattr(torch, cfg["dtype"])
    overrides = {} if layers is None else {"num_hidden_layers": layers}
    config = Qwen2Config(
        **{**cfg["model"], **overrides}, max_position_embeddings=8192, tie_word_embeddings=False
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype).to(device).train()
    b, s, a = shape
    p = min(a + cfg["prompt_text"], s - 1)  # prompt = audio block + instruction/chat-template tokens
    ids = torch.randint(100, config.vocab_size, (b, s), device=device)
    mask = torch.ones((b, s), dtype=torch.long, device=device)
    pad = s // 20
    mask[1::2, :pad] = 0  # left padding on odd rows
    audio = torch.zeros((b, s), dtype=torch.bool, device=device)
    audio[:, pad + AUDIO_OFFSET : pad + AUDIO_OFFSET + a] = True
    query = torch.zeros((b, s), dtype=torch.bool, device=device)
    query[:, p - 1 : s - 1] = True  # rows predicting completion tokens P .. S-1
    return model, {"input_ids": ids, "attention_mask": mask}, audio, query, p


def _attn_loss(mass: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    return -(torch.log(mass + 1e-6) * query).sum() / query.sum()


def step(variant: str, model, batch, audio, query, p: int) -> None:
    from mapo.probe import audio_attention, naive_audio_attention

    model.zero_grad(set_to_none=True)
    c = batch["input_ids"].shape[1] - p
    kwargs = dict(**batch, logits_to_keep=c + 1)
    targets = batch["input_ids"][:, p:]

    def ce(logits):
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten())

    if variant == "plain":
        ce(model(**kwargs).logits).backward()
    elif variant in ("probe", "naive"):
        ctx = (
            audio_attention(model, audio, query)
            if variant == "probe"
            else naive_audio_attention(model, audio, batch["attention_mask"], query)
        )
        with ctx as cap:
            loss = ce(model(**kwargs).logits)
            (loss + _attn_loss(cap.mass, query)).backward()
    else:
        from mapo.probe import default_target_layers

        model.set_attn_implementation("eager")
        out = model(**kwargs, output_attentions=True)
        layers = default_target_layers(model.config.num_hidden_layers)
        per_layer = [(out.attentions[i] * audio[:, None, None, :]).sum(-1).max(dim=1).values for i in layers]
        mass = torch.stack(per_layer).float().mean(0)
        (ce(out.logits) + _attn_loss(mass, query)).backward()
        model.set_attn_implementation("sdpa")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_variants(args, shape, device) -> dict[str, float]:
    model, batch, audio, query, p = build(args.preset, shape, device, args.layers)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    cpu: dict[str, list[float]] = {v: [] for v in args.variants}  # process CPU time (CPU device only)
    for v in args.variants:  # warm-up
        step(v, model, batch, audio, query, p)
    for _ in range(args.repeats):
        for v in args.variants:
            _sync(device)
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step(v, model, batch, audio, query, p)
                end.record()
                torch.cuda.synchronize()
                times[v].append(start.elapsed_time(end) / 1e3)
            else:
                t0, c0 = time.perf_counter(), time.process_time()
                step(v, model, batch, audio, query, p)
                times[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
    return times, cpu


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_worker(args) -> None:
    """Run in a fresh process: peak extra memory (bytes) of one step of ``args.variant``."""
    device = torch.device(args.device)
    shape = PRESETS[args.preset]["shapes"][args.shape_index]
    model, batch, audio, query, p = build(args.preset, shape, device, args.layers)
    if device.type == "cpu":
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(
            -3, 64 * 1024
        )  # M_MMAP_THRESHOLD: large blocks mmapped, returned on free (no dynamic raise)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    step(args.variant, model, batch, audio, query, p)  # warm-up (lazy inits, grad buffers)
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(args.variant, model, batch, audio, query, p)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
        step(args.variant, model, batch, audio, query, p)
        peak = (_status_kib("VmHWM") - base) * 1024
    print(json.dumps({"peak_bytes": peak}))


def measure_memory(args, shape_index: int, variant: str) -> int:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--shape-index", str(shape_index)]
    cmd += ["--preset", args.preset, "--device", args.device, "--threads", str(args.threads)]
    if args.layers is not None:
        cmd += ["--layers", str(args.layers)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: stable timings on a shared machine; 0: default)",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--layers",
        type=int,
        help="decoder depth instead of the preset's (the probe targets the last five either way; "
        "28 = Qwen2-1.5B / Qwen2.5-Omni-7B depth)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--shape-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        return peak_memory_worker(args)
    if args.preset == "gpu" and args.device != "cuda":
        parser.error("--preset gpu needs a CUDA device")
    if "plain" not in args.variants:
        args.variants.insert(0, "plain")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = PRESETS[args.preset]
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, dtype {cfg['dtype']}"
    )
    shown = {**cfg["model"], **({} if args.layers is None else {"num_hidden_layers": args.layers})}
    print("model: Qwen2ForCausalLM", ", ".join(f"{k}={v}" for k, v in shown.items()))
    mem_how = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS rise (VmHWM), fresh process"
    for i, shape in enumerate(cfg["shapes"]):
        b, s, a = shape
        p = min(a + cfg["prompt_text"], s - 1)
        print(
            f"\nshape B={b} S={s}: audio={a} tokens, prompt={p}, completion rows={s - p}, target layers=last 5"
        )
        times, cpu = time_variants(args, shape, device)
        mem = {v: measure_memory(args, i, v) for v in args.variants}
        med = {v: statistics.median(t) for v, t in times.items()}
        low = {v: min(t) for v, t in times.items()}
        print(
            f"{'variant':<8} {'median s':>9} {'ratio':>7} {'min s':>8} {'ratio':>7} {'peak MB':>9} {'ratio':>7}"
            + (f" {'CPU-time ratio':>15}" if any(cpu.values()) else "")
        )
        for v in args.variants:
            row = (
                f"{v:<8} {med[v]:>9.3f} {med[v] / med['plain']:>6.3f}x {low[v]:>8.3f} {low[v] / low['plain']:>6.3f}x "
                f"{mem[v] / 2**20:>9.1f} {mem[v] / mem['plain']:>6.3f}x"
            )
            if any(cpu.values()):
                row += f" {statistics.median(cpu[v]) / statistics.median(cpu['plain']):>14.3f}x"
            print(row)
        print(
            f"(time: wall clock over {args.repeats} interleaved steps, median and min (min is the robust figure on a "
            f"shared machine); CPU-time: median process time; memory: {mem_how})"
        )


if __name__ == "__main__":
    main()
