"""One GPU check of mapo-rl at the paper's scale: one line per check with a ratio or PASS / FAIL, exit 1 on a FAIL.

    python benchmarks/gpu_check.py                      # one CUDA GPU (80-140 GB), bf16, real shapes, <= 8 min
    python benchmarks/gpu_check.py --device cpu --tiny  # every code path at toy size on CPU (CI runs it, ~1 min)

Nothing is downloaded: every model is random-weight, built from the real architectures' shapes
(``mapo.testing.REAL_SHAPES``) with the tiny offline tokenizer and processors. The checks:

1. ``probe_overhead``: ``benchmarks/probe_overhead.py --preset gpu`` (Qwen2-1.5B-shaped decoder, 28 layers, bf16;
   B4 × S2000 and B1 × S5550), the probe variant against a plain SDPA step, time and peak memory, with the
   scaled-dot-product kernels each variant dispatched to (torch profiler: flash / efficient / cudnn / math).
   Targets from the README: ≤ 1.03× time, ≤ 1.01× memory.
2. ``step``: one MAPO step vs one AudioGRPO step (generation + scoring + loss + backward + optimizer; TRL's
   ``step_time`` of the second step, and ``torch.cuda.max_memory_allocated`` over the training minus what was
   allocated before it) on a Qwen2-Audio-7B-shaped model with the LoRA of ``configs/qwen2_audio_7b_instruct_lora.yaml``
   and on a 2-layer slice of the Qwen3-Omni-30B-A3B thinker (128 experts) with the expert LoRA of
   ``configs/qwen3_omni_30b_a3b_thinking_phase1_lora.yaml``; bf16, non-reentrant gradient checkpointing,
   30 s of audio, G 8 × 256 tokens. Targets from the README: MAPO ≤ 1.10× time, ≤ 1.05× memory.
3. ``audio_mass``: the probe's audio attention mass a_t against transformers' eager attention
   (``output_attentions=True``) on the same model and batch, max abs error over the completion rows (bf16 on CUDA:
   ≤ 3e-2, the two attention implementations round differently; fp32: ≤ 1e-4).
4. ``vllm_rollout``: if vLLM is installed and ``benchmarks/rollout_throughput.py`` exists, that script is run with
   ``--device`` and ``--preset gpu`` (Qwen2-Audio-7B's shape; ``--tiny``: ``--preset tiny``, 2 prompts x 4) and must
   exit 0; its last output line is shown. Otherwise a SKIP line.
5. ``vllm_moe_sync`` (two lines): a Qwen3-Omni MoE thinker (2-layer real-width slice, bf16; ``--tiny``: the tiny
   thinker) with the expert LoRA of ``configs/qwen3_omni_30b_a3b_thinking_phase1_lora.yaml`` through
   ``AudioGRPOTrainer`` with colocate vLLM. ``vllm_moe_rollout``: engine, audio rollouts, vLLM vs policy log-probs
   of a fixed completion at the initial weights, sync payload = the loaded checkpoint's names and shapes (runs on
   CPU in ``.venv-vllm``). ``vllm_moe_sync``: one step, ``sync_weights()``, the same comparison (CUDA only: vLLM's
   CPU engine cannot reload MoE experts, SKIP). See :func:`check_vllm_moe_sync` and docs/vllm.md.

With ``--tiny`` the models are the tiny test models and timings are smoke figures (ratios printed, not judged);
the mass check is judged at fp32 tolerance. This machine's CI has no GPU: the CUDA paths follow the library sources
(CUDA events, ``max_memory_allocated``, bf16 via ``MAPOConfig(bf16=True)``) but have not been run here.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import math
import os
import re
import statistics
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
RESULTS: list[str] = []  # "PASS" / "FAIL" / "SKIP" per printed check


def report(name: str, figures: str, verdict: str, note: str = "") -> None:
    """One line per check: ``[PASS] name: figures (note)``."""
    RESULTS.append(verdict)
    print(f"[{verdict}] {name}: {figures}" + (f" ({note})" if note else ""), flush=True)


def judged(ok: bool, tiny: bool) -> str:
    return "PASS" if (tiny or ok) else "FAIL"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------------------
# 1. Probe overhead (benchmarks/probe_overhead.py's own build, step, timing and memory worker)
# ----------------------------------------------------------------------------------------------------------------


def _probe_overhead_module():
    spec = importlib.util.spec_from_file_location("probe_overhead", HERE / "probe_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sdpa_kernels(fn) -> list[str]:
    """The ``aten::_scaled_dot_product_*`` kernels ``fn()`` dispatched to (flash / efficient / cudnn / math)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = {e.key for e in prof.key_averages() if "_scaled_dot_product" in e.key}
    return sorted(n.removeprefix("aten::_scaled_dot_product_") for n in names)


def _stepper(po, variant: str, built):
    return lambda: po.step(variant, *built)


def check_probe_overhead(opts) -> None:
    po = _probe_overhead_module()
    preset = "tiny" if opts.tiny else "gpu"
    cfg = po.PRESETS[preset]
    device = torch.device(opts.device)
    args = Namespace(
        preset=preset,
        layers=None,
        variants=["plain", "probe"],
        repeats=2 if opts.tiny else 5,
        device=opts.device,
        threads=opts.threads,
    )
    for i, shape in enumerate(cfg["shapes"]):
        b, s, a = shape
        name = f"probe_overhead B{b}xS{s} ({a} audio tokens, {cfg['model']['num_hidden_layers']} layers, {cfg['dtype']})"
        try:
            times, _ = po.time_variants(args, shape, device)
            mem = {v: po.measure_memory(args, i, v) for v in args.variants}
            built = po.build(preset, shape, device)
            kernels = {v: sdpa_kernels(_stepper(po, v, built)) for v in args.variants}
            del built
        except Exception as exc:  # one failed check must not hide the others
            report(name, f"error {type(exc).__name__}: {exc}", "FAIL")
            continue
        t = statistics.median(times["probe"]) / statistics.median(times["plain"])
        m = mem["probe"] / max(mem["plain"], 1)
        shown = "; ".join(f"{v}: {', '.join(k) or 'none'}" for v, k in kernels.items())
        ok = t <= 1.03 and m <= 1.01 and bool(kernels["probe"])
        report(
            name,
            f"time {t:.3f}x, peak memory {m:.3f}x of plain SDPA; SDPA kernels {shown}",
            judged(ok, opts.tiny),
            "tiny CPU smoke run: not judged" if opts.tiny else "target <= 1.03x time, <= 1.01x memory",
        )
        _free(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# 2. One MAPO step vs one AudioGRPO step, with LoRA (experts included for Qwen3-Omni)
# ----------------------------------------------------------------------------------------------------------------

FAMILIES = {
    # name: (real-shape family, num_layers, shipped LoRA config)
    "qwen2_audio_7b": ("qwen2_audio_7b", None, "qwen2_audio_7b_instruct_lora.yaml"),
    "qwen3_omni_moe_2layer": (
        "qwen3_omni_30b_a3b_thinker",
        2,
        "qwen3_omni_30b_a3b_thinking_phase1_lora.yaml",
    ),
}


def shipped_lora(config_name: str):
    """The LoraConfig ``mapo train --config configs/NAME`` builds (TRL's ``get_peft_config`` + the expert rank)."""
    import yaml
    from trl import ModelConfig, get_peft_config

    from mapo.trainer.lora import with_expert_rank

    raw = yaml.safe_load((CONFIGS / config_name).read_text())
    fields = set(ModelConfig.__dataclass_fields__)
    model_args = ModelConfig(**{k: v for k, v in raw.items() if k in fields})
    return with_expert_rank(
        get_peft_config(model_args), raw.get("lora_expert_r"), raw.get("lora_expert_alpha")
    )


def _model_and_processor(family: str, opts):
    from mapo import testing

    real, layers, _ = FAMILIES[family]
    seconds = 1 if opts.tiny else 30
    if family == "qwen2_audio_7b":
        processor = testing.tiny_qwen2_audio_processor(chunk_seconds=seconds)
        if opts.tiny:
            return testing.tiny_qwen2_audio(tokenizer=processor.tokenizer), processor, seconds
    else:
        processor = testing.tiny_qwen3_omni_processor(chunk_seconds=seconds)
        if opts.tiny:
            return testing.tiny_qwen3_omni_thinker().model, processor, seconds
    model = testing.real_shape_model(
        real, num_layers=layers, device=opts.device, dtype=torch.bfloat16, tokenizer=processor.tokenizer
    )
    return model, processor, seconds


def run_step(family: str, variant: str, opts) -> dict[str, float]:
    """Two training steps of ``variant`` (the first warms up); step time of the second and peak memory."""
    from datasets import Dataset

    from mapo.rewards import accuracy_reward, format_reward
    from mapo.testing import sine_clip
    from mapo.trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer

    device = torch.device(opts.device)
    model, processor, seconds = _model_and_processor(family, opts)
    g = 4 if opts.tiny else 8

    def varied(completions, **kw):  # varies inside a group, so the policy-gradient term is not 0
        return [float(len(c[-1]["content"]) % 3) for c in completions]

    rows = [
        {
            "audio": sine_clip(200.0 + 40 * i, seconds).tolist(),
            "question": "Low or high?",
            "choices": ["low", "high"],
            "answer": "low",
        }
        for i in range(2)
    ]
    args = MAPOConfig(
        output_dir=str(Path(opts.workdir) / f"{family}-{variant}"),
        per_device_train_batch_size=g,
        num_generations=g,
        max_completion_length=8 if opts.tiny else 256,
        max_steps=2,
        logging_steps=1,
        report_to=[],
        bf16=device.type == "cuda",
        use_cpu=device.type == "cpu",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        pos_tagger="lexicon",
        save_strategy="no",
        beta=0.002,
        learning_rate=1e-6,
        seed=0,
        shuffle_dataset=False,
        dataloader_num_workers=0,
    )
    cls = AudioGRPOTrainer if variant == "grpo" else MAPOTrainer
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    trainer = cls(
        model=model,
        reward_funcs=[accuracy_reward, format_reward, varied],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        peft_config=shipped_lora(FAMILIES[family][2]),
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):  # one output line per check
        trainer.remove_callback(callback)
    trainer.train()
    _sync(device)
    peak = (torch.cuda.max_memory_allocated() - before) if device.type == "cuda" else float("nan")
    step_times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    del trainer, model
    _free(device)
    return {"step_time": step_times[-1], "peak_bytes": peak}


def check_steps(opts) -> None:
    for family in FAMILIES:
        name = f"step {family} LoRA ({'tiny CPU model' if opts.tiny else 'real shapes, bf16'})"
        try:
            res = {v: run_step(family, v, opts) for v in ("grpo", "mapo")}
        except Exception as exc:
            report(name, f"error {type(exc).__name__}: {exc}", "FAIL")
            continue
        t = res["mapo"]["step_time"] / res["grpo"]["step_time"]
        m = res["mapo"]["peak_bytes"] / res["grpo"]["peak_bytes"]
        mem = (
            f"peak memory {res['mapo']['peak_bytes'] / 2**30:.1f} vs {res['grpo']['peak_bytes'] / 2**30:.1f} GiB "
            f"= {m:.3f}x"
            if not math.isnan(m)
            else "peak memory n/a on CPU (one process runs both)"
        )
        ok = t <= 1.10 and m <= 1.05 and math.isfinite(t)
        report(
            name,
            f"MAPO {res['mapo']['step_time']:.2f} s vs AudioGRPO {res['grpo']['step_time']:.2f} s = {t:.3f}x; {mem}",
            judged(ok, opts.tiny) if math.isfinite(t) else "FAIL",
            "tiny CPU smoke run: not judged" if opts.tiny else "target <= 1.10x time, <= 1.05x memory",
        )


# ----------------------------------------------------------------------------------------------------------------
# 3. The probe's audio mass against eager attention
# ----------------------------------------------------------------------------------------------------------------


def eager_audio_mass(model, batch, audio, layers) -> torch.Tensor:
    """a_t from transformers' eager attention weights: audio share per query, max over heads, mean over layers."""
    model.set_attn_implementation("eager")
    try:
        out = model(**batch, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    per_layer = [(out.attentions[i].float() * audio[:, None, None, :]).sum(-1).amax(dim=1) for i in layers]
    return torch.stack(per_layer).mean(0)


def check_audio_mass(opts) -> None:
    from mapo.probe import audio_attention, default_target_layers

    po = _probe_overhead_module()
    device = torch.device(opts.device)
    preset = "tiny" if opts.tiny else "gpu"
    shape = po.PRESETS[preset]["shapes"][0]
    dtype = po.PRESETS[preset]["dtype"]
    name = f"audio_mass probe vs eager B{shape[0]}xS{shape[1]} ({dtype}, {device.type}, 6 layers)"
    try:
        model, batch, audio, query, _ = po.build(preset, shape, device, layers=6)
        model.eval()
        layers = default_target_layers(model.config.num_hidden_layers)
        with torch.no_grad():
            with audio_attention(model, audio, query, target_layers=layers) as cap:
                model(**batch)
            probe = cap.mass.float()
            eager = eager_audio_mass(model, batch, audio, layers)
        err = (probe - eager)[query].abs().max().item()
    except Exception as exc:
        report(name, f"error {type(exc).__name__}: {exc}", "FAIL")
        return
    tol = 3e-2 if dtype == "bfloat16" else 1e-4
    report(
        name,
        f"max abs error {err:.2e} over {int(query.sum())} query rows",
        "PASS" if err <= tol else "FAIL",
        f"tolerance {tol:g}",
    )
    del model
    _free(device)


# ----------------------------------------------------------------------------------------------------------------
# 4. vLLM rollout throughput (the script of the vLLM integration)
# ----------------------------------------------------------------------------------------------------------------


def check_vllm(opts) -> None:
    script = HERE / "rollout_throughput.py"
    name = "vllm_rollout throughput vs generate()"
    if importlib.util.find_spec("vllm") is None:
        report(name, "vLLM is not installed", "SKIP", "pip install the vllm extra to run it")
        return
    if not script.exists():
        report(name, f"{script.name} not found", "SKIP", "it comes with the vLLM rollout integration")
        return
    # the script has presets, not --tiny: the test model (a short run) or Qwen2-Audio-7B's shape
    preset = (
        ["--preset", "tiny", "--prompts", "2", "--generations", "4"] if opts.tiny else ["--preset", "gpu"]
    )
    cmd = [sys.executable, str(script), "--device", opts.device, *preset]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else proc.stderr.strip().splitlines()[-1:] or ["no output"]
    report(name, str(last), "PASS" if proc.returncode == 0 else "FAIL", f"exit code {proc.returncode}")


# ----------------------------------------------------------------------------------------------------------------
# 5. Qwen3-Omni MoE expert-LoRA weight sync into a running vLLM engine (colocate)
# ----------------------------------------------------------------------------------------------------------------

MOE_FAMILY = "qwen3_omni_moe_thinker"
#: max |log p_vLLM - log p_policy| over the fixed completion's tokens: bf16 engine and trainer round differently
#: (kernels, accumulation order); fp32 agrees to ~1e-5 on CPU, TF32 matmuls on GPU allow a little more.
MOE_SYNC_TOLERANCE = {"bfloat16": 0.1, "float32": 2e-3}
CPU_EXPERT_RELOAD = (
    "vLLM's CPU engine cannot reload MoE expert weights in a running engine (AudioVLLMGeneration.sync_weights "
    "raises NotImplementedError on CPU); the sync runs on CUDA"
)


def _moe_policy_checkpoint(opts, directory: str) -> str:
    """A full Qwen3-Omni checkpoint vLLM loads: the tiny thinker (``--tiny``) or a 2-layer slice of the
    30B-A3B thinker at real width (hidden 2048, 128 experts x 768, real audio tower) with the tiny tokenizer's
    448-token vocabulary (the vocabulary plays no part in the expert sync), bf16."""
    from mapo import testing
    from mapo.trainer.rollout import save_vllm_checkpoint

    if opts.tiny:
        return testing.save_tiny_omni_for_vllm(directory, MOE_FAMILY)
    processor = testing.tiny_real_omni_processor(MOE_FAMILY)
    model = testing.real_shape_model(
        "qwen3_omni_30b_a3b_thinker",
        num_layers=2,
        device=opts.device,
        dtype=torch.bfloat16,
        tokenizer=processor.tokenizer,
        vocab_size=448,
    )
    save_vllm_checkpoint(model, processor, directory)
    del model
    _free(torch.device(opts.device))
    return directory


@contextlib.contextmanager
def _zeroed(model, keep):
    """``model`` with the parameters whose name satisfies ``keep`` set to 0, restored on exit; yields their count."""
    params = {n: p for n, p in model.named_parameters() if keep(n)}
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.zero_()
    try:
        yield len(params)
    finally:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)


def _expert_base(name: str) -> bool:
    """The fused expert stacks themselves (not their adapters)."""
    return ".mlp.experts." in name and "lora_" not in name


def _expert_update(name: str) -> bool:
    """The expert adapters' B factors: at 0 the adapters are at their initial value (what a stale sync leaves)."""
    return ".experts" in name and "lora_B" in name


def check_vllm_moe_sync(opts) -> None:
    """Qwen3-Omni MoE thinker with the shipped expert LoRA through the library's colocate vLLM path.

    ``AudioGRPOTrainer(use_vllm=True, vllm_mode="colocate")`` builds the engine from a saved full-Omni checkpoint
    (``--tiny``: the tiny thinker, fp32; else a 2-layer real-width slice, bf16) and the policy gets the LoRA of
    ``configs/qwen3_omni_30b_a3b_thinking_phase1_lora.yaml`` (q/k/v/o r 128 + every fused expert stack r 16).

    Line ``vllm_moe_rollout``: audio rollouts through ``AudioVLLMGeneration.generate`` (2 clips x 2), and vLLM's
    log-probs of a fixed completion after an audio prompt against the policy's at the initial weights
    (:mod:`mapo.trainer.rollout.parity`). The engine loaded the per-expert checkpoint tensors the sync sends
    (``to_vllm_names``) through the same ``load_weights`` the sync's ``reload_weights`` calls, so this line also
    checks the expert names and shapes, on CPU too. vLLM's fused expert weights, read in the engine
    (``collective_rpc``), are compared with the payload; they match exactly where the MoE kernel keeps the
    checkpoint layout (CUDA's Triton path), while the CPU kernel prepacks them (then log-probs only).

    Line ``vllm_moe_sync`` (CUDA only, see :data:`CPU_EXPERT_RELOAD`): one training step (its generation follows
    a sync and the drift check), then ``sync_weights()`` and the same comparison with the trained adapters; with
    comparable weights vLLM's experts must differ from the trained payload before the sync and equal it after,
    otherwise the expert adapters' own effect on the log-probs must exceed the tolerance (:func:`_sync_verdict`).

    What the sync sends and what vLLM 0.30 accepts (read in its source): ``_iter_named_params`` merges the LoRA
    out of place and ``to_vllm_names`` reverts transformers' fused ``mlp.experts.gate_up_proj`` [E, 2I, H] /
    ``down_proj`` [E, H, I] to per-expert ``thinker.model.layers.L.mlp.experts.E.{gate,up}_proj.weight`` [I, H]
    and ``down_proj.weight`` [H, I]. vLLM's ``Qwen3OmniMoeThinkerForConditionalGeneration.load_weights``
    (model_executor/models/qwen3_omni_moe_thinker.py) maps ``thinker.model.`` to ``language_model.model.``;
    ``Qwen3MoeModel.hf_to_vllm_mapper`` (qwen3_moe.py) stacks only ``.mlp.gate_proj``/``.mlp.up_proj`` (not the
    experts'), so the expert tensors reach ``RoutedExperts.load_weights`` (layers/fused_moe/routed_experts.py),
    whose ``build_expert_params_mapping`` maps ``experts.E.gate_proj.`` / ``up_proj.`` / ``down_proj.`` to
    ``w13_weight`` shards w1 / w3 and ``w2_weight`` of expert E; ``weight_loader`` narrows dim 0 (w1, w3) or dim 1
    (w2) by tensor-parallel rank and copies into ``w13_weight[E]`` [2I, H] / ``w2_weight[E]`` [H, I]: the
    [out, in] layout of the per-expert tensors. The GPU worker's ``reload_weights(weights_iterator,
    is_checkpoint_format=True)`` (v1/worker/gpu_model_runner.py) runs that ``load_weights`` inside
    ``initialize_layerwise_reload`` / ``finalize_layerwise_reload`` and logs any weight not loaded.
    """
    size = "tiny" if opts.tiny else "2-layer real width"
    dtype = "float32" if opts.tiny else "bfloat16"
    rollout_name = f"vllm_moe_rollout qwen3_omni_moe thinker + expert LoRA ({size}, {dtype}, colocate)"
    sync_name = f"vllm_moe_sync qwen3_omni_moe expert LoRA after one step ({size}, {dtype}, colocate)"
    if importlib.util.find_spec("vllm") is None:
        for name in (rollout_name, sync_name):
            report(name, "vLLM is not installed", "SKIP", "pip install the vllm extra to run it")
        return
    if importlib.util.find_spec("torchvision") is None:
        for name in (rollout_name, sync_name):
            report(name, "torchvision is not importable", "SKIP", "vLLM's Omni processor needs it")
        return
    from mapo.trainer.rollout.engine_support import release_engine

    device = torch.device(opts.device)
    tol = MOE_SYNC_TOLERANCE[dtype]
    trainer = None
    try:
        trainer, processor = _moe_trainer(opts, tol)
        rollout = _moe_rollout_parity(trainer, processor)
    except Exception as exc:
        report(rollout_name, f"error {type(exc).__name__}: {exc}", "FAIL")
        report(sync_name, "not run: the engine or rollouts failed", "FAIL")
        release_engine(trainer)
        return
    # The engine's expert weights can be compared with the payload only where the MoE kernel keeps the checkpoint
    # layout (CUDA's Triton path); vLLM's CPU kernels prepack them (cpu_prepack_moe_weight, same shape).
    comparable = rollout["experts_diff"] == 0
    weights = (
        f"vLLM's expert weights = the sync payload's (max abs diff 0 over {rollout['experts_compared']} expert "
        f"tensors, {rollout['layout']})"
        if comparable
        else "vLLM's expert weights are prepacked by its MoE kernel (not comparable with the payload: log-probs only)"
    )
    report(
        rollout_name,
        f"engine built, {rollout['rollouts']} audio rollouts ({rollout['tokens']} tokens); initial weights: max abs "
        f"log-prob diff vLLM vs policy {rollout['err']:.2e} over {rollout['n']} completion tokens (the experts move "
        f"them by {rollout['expert_effect']:.2e}); {weights}; payload {rollout['sent']} tensors = the loaded "
        "checkpoint's names and shapes",
        "PASS" if rollout["err"] <= tol else "FAIL",
        f"tolerance {tol:g}",
    )
    if device.type == "cpu":
        report(sync_name, "not run on CPU", "SKIP", CPU_EXPERT_RELOAD)
        release_engine(trainer)
        return
    try:
        res = _moe_sync_parity(trainer, processor)
    except Exception as exc:
        report(sync_name, f"error {type(exc).__name__}: {exc}", "FAIL")
        release_engine(trainer)
        return
    ok, rule = _sync_verdict(res, tol, comparable)
    weights = (
        f"vLLM's expert weights vs the trained payload: max abs diff {res['experts_before']:.1e} before the sync, "
        f"{res['experts_after']:.1e} after ({res['experts_compared']} expert tensors, {res['layout']})"
        if comparable
        else "vLLM's expert weights prepacked (log-probs only)"
    )
    report(
        sync_name,
        f"{weights}; max abs log-prob diff vLLM vs policy {res['err']:.2e} after sync (stale engine "
        f"{res['stale']:.2e}; the expert adapters move the policy by {res['expert_effect']:.2e}); sync "
        f"{res['sync_seconds']:.1f} s, drift check {res['drift']:.2e}",
        "PASS" if ok else "FAIL",
        f"tolerance {tol:g}; {rule}",
    )
    release_engine(trainer)


def _sync_verdict(res: dict, tol: float, comparable: bool) -> tuple[bool, str]:
    """PASS or FAIL of ``vllm_moe_sync`` from :func:`_moe_sync_parity`'s figures, and the rule applied."""
    if comparable:  # exact: the sync wrote the trained experts, which the step had changed
        ok = res["err"] <= tol and res["experts_after"] == 0 < res["experts_before"]
        return ok, "expert weights exact after the sync and changed by the step"
    # log-probs only: a stale expert sync must be visible beyond the tolerance
    return res["err"] <= tol < res["expert_effect"], "the expert adapters' effect must exceed it"


def _moe_trainer(opts, tol: float):
    from datasets import Dataset
    from trl import GRPOConfig

    from mapo.modality import load_policy_model
    from mapo.testing import sine_clip, tiny_qwen3_omni_processor
    from mapo.trainer import AudioGRPOTrainer

    device = torch.device(opts.device)
    work = Path(opts.workdir) / "vllm-moe-sync"
    checkpoint = _moe_policy_checkpoint(opts, str(work / "policy"))

    def varied(completions, **kw):
        return [float(len(c[-1]["content"]) % 3) for c in completions]

    rows = [
        {
            "audio": sine_clip(220.0 * (1 + 2 * i), 1.0, seed=i).tolist(),
            "question": "Low or high?",
            "choices": ["low", "high"],
            "answer": "low",
        }
        for i in range(2)
    ]
    args = GRPOConfig(
        output_dir=str(work / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        report_to=[],
        bf16=not opts.tiny,
        use_cpu=device.type == "cpu",
        save_strategy="no",
        learning_rate=5e-2,  # one large step on a random model: the expert adapters must visibly move
        beta=0.0,
        seed=0,
        top_k=0,  # vLLM renormalises its log-probs after top-k/top-p: keep the full distribution
        top_p=1.0,
        temperature=1.0,
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=512,
        vllm_gpu_memory_utilization=0.3,
        shuffle_dataset=False,
        dataloader_num_workers=0,
    )
    args.vllm_llm_kwargs = {"enforce_eager": True}
    args.vllm_drift_tolerance = tol
    model = load_policy_model(checkpoint, args, dtype="float32" if opts.tiny else "bfloat16")
    processor = tiny_qwen3_omni_processor()
    trainer = AudioGRPOTrainer(
        model,
        [varied],
        args,
        Dataset.from_list(rows[:1]),
        processing_class=processor,
        peft_config=shipped_lora(FAMILIES["qwen3_omni_moe_2layer"][2]),
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    return trainer, processor


def _moe_prompt(processor, clip):
    conversation = [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": "Low or high?"}],
        }
    ]
    return processor.apply_chat_template(
        [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def _moe_fixed_case(trainer, processor):
    from mapo.testing import sine_clip

    clip = sine_clip(330.0, 1.0, seed=5)
    inputs = _moe_prompt(processor, clip)
    completion = processor.tokenizer("The answer is low.", add_special_tokens=False)["input_ids"]
    return clip, inputs, completion


def _moe_scores(trainer, processor) -> tuple[torch.Tensor, torch.Tensor]:
    from mapo.trainer.rollout.parity import policy_completion_logps, vllm_completion_logps

    clip, inputs, completion = _moe_fixed_case(trainer, processor)
    prompt_ids = inputs["input_ids"][0].tolist()
    model = trainer.accelerator.unwrap_model(trainer.model)
    got = vllm_completion_logps(trainer.vllm_generation, prompt_ids, completion, clip, trainer.modality)
    want = policy_completion_logps(model, inputs, completion)
    return got, want


def _moe_rollout_parity(trainer, processor) -> dict:
    """Audio rollouts through the engine (2 clips x 2 samples) and the initial-weights parity."""
    import numpy as np

    from mapo.testing import sine_clip

    engine = trainer.vllm_generation
    clips = [
        sine_clip(200.0, 1.0, seed=1),
        np.random.default_rng(4).standard_normal(16000).astype(np.float32) * 0.3,
    ]
    prompts = [_moe_prompt(processor, c)["input_ids"][0].tolist() for c in clips]
    prompts, clips = [p for p in prompts for _ in range(2)], [c for c in clips for _ in range(2)]
    with engine.audio_clips(clips):
        _, completion_ids, _, _ = engine.generate(prompts, None, 2)
    if len(completion_ids) != len(prompts) or not all(completion_ids):
        raise RuntimeError(f"vLLM returned {len(completion_ids)} rollouts for {len(prompts)} prompts")
    got, want = _moe_scores(trainer, processor)
    from mapo.trainer.rollout.parity import policy_completion_logps

    clip, inputs, completion = _moe_fixed_case(trainer, processor)
    model = trainer.accelerator.unwrap_model(trainer.model)
    with _zeroed(model, _expert_base) as stacks:
        without = policy_completion_logps(model, inputs, completion)
    if not stacks:
        raise RuntimeError("the policy has no fused expert parameters (mlp.experts.*)")
    sent, experts = _payload_matches_checkpoint(engine)
    weights_diff, compared, layout = _engine_expert_diff(engine)
    return {
        "experts_diff": weights_diff,
        "experts_compared": compared,
        "layout": layout,
        "sent": sent,
        "sent_experts": experts,
        "rollouts": len(completion_ids),
        "tokens": sum(len(c) for c in completion_ids),
        "err": (got - want).abs().max().item(),
        "n": len(got),
        "expert_effect": (want - without).abs().max().item(),
    }


def _payload_matches_checkpoint(engine) -> tuple[int, int]:
    """The sync's payload (``_iter_named_params``: merged LoRA under vLLM's names) has exactly the names and shapes
    of the checkpoint the engine loaded at start-up (through the same ``load_weights`` the sync's reload calls)."""
    from safetensors import safe_open

    payload = {name: tuple(t.shape) for name, t in engine._iter_named_params()}
    path = Path(engine.llm.llm_engine.model_config.model) / "model.safetensors"
    with safe_open(str(path), "pt") as fh:
        loaded = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    if payload != loaded:
        diff = (
            sorted(set(payload) ^ set(loaded))[:5]
            or [(k, payload[k], loaded[k]) for k in payload if payload[k] != loaded[k]][:5]
        )
        raise RuntimeError(f"the sync payload differs from the checkpoint vLLM loaded: {diff}")
    return len(payload), sum(".mlp.experts." in name for name in payload)


def _vllm_expert_params(worker) -> dict[str, torch.Tensor]:
    """(Run in vLLM's worker by ``collective_rpc``.) The fused MoE weights of the running engine's model:
    ``...layers.L.mlp.experts...w13_weight`` [E, 2I, H] (gate | up) and ``...w2_weight`` [E, H, I]."""
    runner = worker.model_runner
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    return {n: p.detach() for n, p in model.named_parameters() if n.endswith(("w13_weight", "w2_weight"))}


def _engine_expert_diff(engine) -> tuple[float, int, str]:
    """Max abs difference between the engine's fused expert weights and the sync payload's per-expert tensors
    (what ``sync_weights`` sends now), the number of expert tensors compared, and a layout note.

    Read in place through ``collective_rpc`` (colocate: the engine is in this process). ``w13_weight[E]`` is
    compared with ``cat(gate_proj, up_proj)`` of expert E, or ``cat(up, gate)`` when the kernel stores them swapped;
    a shape other than the checkpoint layout raises ``ValueError``.
    """
    payload = {n: t for n, t in engine._iter_named_params() if ".mlp.experts." in n}
    params = engine.llm.collective_rpc(_vllm_expert_params)[0]
    if not params:
        raise ValueError("the engine's model has no w13_weight / w2_weight (another MoE layout)")
    worst, compared, swapped = 0.0, 0, False
    for name, param in sorted(params.items()):
        layer = re.search(r"layers\.(\d+)\.", name).group(1)
        for e in range(param.shape[0]):
            key = f"thinker.model.layers.{layer}.mlp.experts.{e}.{{}}_proj.weight"
            got = param[e].float()
            if name.endswith("w13_weight"):
                gate, up = payload[key.format("gate")], payload[key.format("up")]
                wants = [torch.cat([gate, up]), torch.cat([up, gate])]
            else:
                wants = [payload[key.format("down")]]
            if tuple(got.shape) != tuple(wants[0].shape):
                raise ValueError(
                    f"{name}[{e}] is {tuple(got.shape)}, the checkpoint layout {tuple(wants[0].shape)}"
                )
            diffs = [(got - w.to(got.device).float()).abs().max().item() for w in wants]
            swapped |= len(diffs) == 2 and diffs[1] < diffs[0]
            worst = max(worst, min(diffs))
            compared += 2 if name.endswith("w13_weight") else 1
    return worst, compared, "gate/up stored swapped" if swapped else "checkpoint layout"


def _moe_sync_parity(trainer, processor) -> dict:
    """One training step, then a sync and the fixed completion's log-probs (vLLM vs policy)."""
    trainer.train()
    engine = trainer.vllm_generation
    drift = [h["vllm/sync_logp_drift"] for h in trainer.state.log_history if "vllm/sync_logp_drift" in h]
    stale, want = _moe_scores(trainer, processor)  # vLLM still holds the weights of before the step
    before = _engine_expert_diff(engine)[0]
    engine.sync_weights()
    got, want = _moe_scores(trainer, processor)
    after, compared, layout = _engine_expert_diff(engine)
    model = trainer.accelerator.unwrap_model(trainer.model)
    clip, inputs, completion = _moe_fixed_case(trainer, processor)
    from mapo.trainer.rollout.parity import policy_completion_logps

    with _zeroed(model, _expert_update) as stacks:
        without = policy_completion_logps(model, inputs, completion)
    return {
        "experts_before": before,
        "experts_after": after,
        "experts_compared": compared,
        "layout": layout,
        "err": (got - want).abs().max().item(),
        "stale": (stale - want).abs().max().item(),
        "expert_effect": (want - without).abs().max().item(),
        "expert_stacks": stacks,
        "sync_seconds": engine.last_sync_seconds or float("nan"),
        "drift": drift[-1] if drift else float("nan"),
    }


CHECKS = {
    "probe_overhead": check_probe_overhead,
    "step": check_steps,
    "audio_mass": check_audio_mass,
    "vllm": check_vllm,
    "vllm_moe_sync": check_vllm_moe_sync,
}


def _torchvision_stand_in(opts) -> None:
    """CPU smoke run in the vLLM CPU venv (no torchvision: PyPI's wheels are CUDA builds that break ``import vllm``
    beside the CPU torch): put the test suite's torchvision stand-in on the path for vLLM's Omni processor, as
    tests/conftest.py does, before transformers is imported. A GPU install has the real torchvision."""
    stub = HERE.parent / "tests" / "trainer" / "rollout" / "_torchvision_stub"
    if (
        opts.device != "cpu"
        or not stub.is_dir()
        or importlib.util.find_spec("vllm") is None
        or importlib.util.find_spec("torchvision") is not None
    ):
        return
    sys.path.insert(0, str(stub))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(stub), os.environ.get("PYTHONPATH")) if p)
    # one process: vLLM's engine core in this interpreter (as the vLLM tests run it)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="toy-size models: a CPU smoke run of every path")
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run only these checks")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (probe_overhead's setting)")
    parser.add_argument(
        "--workdir", default=None, help="scratch folder for trainer outputs (default: a temp dir)"
    )
    opts = parser.parse_args(argv)
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible; run with --device cpu --tiny for the CPU smoke run")
    if opts.device == "cpu" and not opts.tiny:
        parser.error("real shapes need a GPU; on CPU add --tiny")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    import tempfile

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if opts.only is None or "vllm_moe_sync" in opts.only:
        _torchvision_stand_in(opts)
    start = time.perf_counter()
    gpu = torch.cuda.get_device_name() if opts.device == "cuda" else "cpu"
    print(
        f"gpu_check: torch {torch.__version__}, device {gpu}, {'tiny' if opts.tiny else 'real shapes'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        opts.workdir = opts.workdir or tmp
        for key, check in CHECKS.items():
            if opts.only is None or key in opts.only:
                check(opts)
    failed = RESULTS.count("FAIL")
    print(
        f"gpu_check: {RESULTS.count('PASS')} passed, {failed} failed, {RESULTS.count('SKIP')} skipped "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
