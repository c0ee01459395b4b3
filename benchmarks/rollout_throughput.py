"""Rollout throughput: transformers ``generate()`` vs vLLM (colocate engine) on the same audio prompts.

Both paths get the same random-weight Qwen2-Audio (saved once), the same prompts (P clips x G completions), the
same sampling settings and exactly ``--new-tokens`` tokens per completion (EOS ignored, so both do the same work).
Prints completions/s and tokens/s of each path and their ratio vLLM / generate(). vLLM's start-up is reported
apart (it is paid once per run, not per step).

    python benchmarks/rollout_throughput.py                       # CPU: the tiny model, then a larger one
    python benchmarks/rollout_throughput.py --device cuda --preset gpu   # users with a GPU (vllm wheel)

Needs vLLM (``make venv-vllm`` makes ``.venv-vllm``; ``make bench-vllm`` runs this script there).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

PRESETS = {
    # the test model: hidden 64, 2 layers, head_dim 32
    "tiny": dict(hidden=64, layers=2, heads=2, kv_heads=1, vocab=448, audio_d=32, audio_layers=1),
    # a Qwen2-Audio-shaped model that fits a 2-core CPU (~40M parameters, head_dim 64)
    "cpu": dict(hidden=512, layers=8, heads=8, kv_heads=2, vocab=448, audio_d=256, audio_layers=4),
    # Qwen2-Audio-7B's language-model shape, random weights (GPU only)
    "gpu": dict(hidden=4096, layers=32, heads=32, kv_heads=32, vocab=448, audio_d=1280, audio_layers=32),
}


def build_checkpoint(preset: dict, directory: str, dtype: torch.dtype):
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from mapo.testing import _special_id, tiny_qwen2_audio_processor

    processor = tiny_qwen2_audio_processor(chunk_seconds=30)  # vLLM's Qwen2-Audio needs the 3000-frame window
    tok = processor.tokenizer
    config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": preset["audio_d"],
            "encoder_layers": preset["audio_layers"],
            "encoder_attention_heads": max(1, preset["audio_d"] // 64),
            "encoder_ffn_dim": 4 * preset["audio_d"],
            "num_mel_bins": 128,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": preset["vocab"],
            "hidden_size": preset["hidden"],
            "intermediate_size": int(2.75 * preset["hidden"]),
            "num_hidden_layers": preset["layers"],
            "num_attention_heads": preset["heads"],
            "num_key_value_heads": preset["kv_heads"],
            "max_position_embeddings": 2048,
            "eos_token_id": _special_id(tok, "<|im_end|>"),
            "pad_token_id": _special_id(tok, "<|endoftext|>"),
        },
        audio_token_index=_special_id(tok, "<|AUDIO|>"),
    )
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


def prompts(processor, n: int):
    from mapo.testing import sine_clip

    clips = [sine_clip(200.0 + 150.0 * i, 2.0, seed=i) for i in range(n)]
    conversations = [
        [
            {
                "role": "user",
                "content": [{"type": "audio", "audio": c}, {"type": "text", "text": "Describe it."}],
            }
        ]
        for c in clips
    ]
    return clips, conversations


def run_generate(model, processor, conversations, g: int, new_tokens: int, device: str) -> float:
    batch = [c for c in conversations for _ in range(g)]
    inputs = processor.apply_chat_template(
        batch, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", padding=True
    ).to(device)
    model.to(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=True,
            temperature=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=model.generation_config.pad_token_id,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] - inputs["input_ids"].shape[1] == new_tokens
    return elapsed


def run_vllm(directory, processor, clips, conversations, g, new_tokens, dtype) -> tuple[float, float]:
    from vllm import LLM, SamplingParams

    from mapo.modality import resolve_modality
    from mapo.trainer.rollout import build_requests

    start = time.perf_counter()
    llm = LLM(
        model=directory,
        dtype=dtype,
        max_model_len=1024,
        limit_mm_per_prompt={"audio": 1},
        enforce_eager=True,
        seed=0,
    )
    startup = time.perf_counter() - start
    spec = resolve_modality(llm_config_model(directory), tokenizer=processor.tokenizer)
    ids = [
        processor.apply_chat_template([c], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ][0]
        for c in conversations
    ]
    requests = [r for r in build_requests(ids, clips, spec) for _ in range(g)]
    params = SamplingParams(temperature=1.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
    llm.generate(requests[:1], params, use_tqdm=False)  # warm-up (first request compiles kernels)
    start = time.perf_counter()
    outs = llm.generate(requests, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    assert all(len(o.outputs[0].token_ids) == new_tokens for o in outs)
    return elapsed, startup


def llm_config_model(directory):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(directory)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS), help="default: tiny and cpu")
    parser.add_argument("--prompts", type=int, default=4, help="distinct audio prompts P")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt G")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    n_completions = args.prompts * args.generations
    n_tokens = n_completions * args.new_tokens
    print(
        f"device={args.device} dtype={dtype} P={args.prompts} G={args.generations} new_tokens={args.new_tokens}"
    )
    for name in args.preset or ["tiny", "cpu"]:
        with tempfile.TemporaryDirectory() as directory:
            model, processor = build_checkpoint(PRESETS[name], directory, dtype)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            clips, conversations = prompts(processor, args.prompts)
            t_hf = run_generate(
                model, processor, conversations, args.generations, args.new_tokens, args.device
            )
            del model
            t_vllm, startup = run_vllm(
                directory,
                processor,
                clips,
                conversations,
                args.generations,
                args.new_tokens,
                str(dtype).removeprefix("torch."),
            )
        print(
            f"[{name}: {params:.1f}M params] generate(): {n_completions / t_hf:.2f} completions/s, "
            f"{n_tokens / t_hf:.1f} tokens/s | vLLM: {n_completions / t_vllm:.2f} completions/s, "
            f"{n_tokens / t_vllm:.1f} tokens/s (start-up {startup:.1f} s, once) | "
            f"ratio vLLM/generate() = {t_hf / t_vllm:.2f}x"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
