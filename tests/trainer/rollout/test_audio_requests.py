"""vLLM request building, checkpoint names and the drift statistic, without vLLM (fast, main venv)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mapo.modality import resolve_modality
from mapo.testing import tiny_qwen2_audio_for_vllm, tiny_qwen3_omni_thinker, tiny_qwen25_omni_thinker
from mapo.trainer.rollout import (
    build_requests,
    collapse_placeholder_runs,
    logp_drift,
    placeholder_runs,
    suppression_bias,
    to_vllm_names,
)
from mapo.trainer.rollout.audio_requests import check_prompt_ids, clip_for_processor
from mapo.trainer.rollout.checkpoint import save_vllm_weights, vllm_state_dict
from mapo.trainer.rollout.engine import VLLMAudioOptions, engine_dtype

A = 7  # placeholder id used in the id-list tests


def test_collapse_and_runs_against_a_naive_scan():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = rng.choice([1, 2, A], size=30, p=[0.4, 0.3, 0.3]).tolist()
        collapsed, runs = collapse_placeholder_runs(ids, A)
        naive = [t for i, t in enumerate(ids) if not (t == A and i > 0 and ids[i - 1] == A)]
        assert collapsed == naive
        found = placeholder_runs(ids, A)
        assert runs == len(found)
        # the runs cover exactly the placeholder positions
        covered = {o for r in found for o in range(r["offset"], r["offset"] + r["length"])}
        assert covered == {i for i, t in enumerate(ids) if t == A}


def test_build_requests_one_placeholder_per_clip_and_the_processors_window():
    _, processor = tiny_qwen2_audio_for_vllm()
    model, _ = tiny_qwen2_audio_for_vllm()
    spec = resolve_modality(model, tokenizer=processor.tokenizer)
    a = spec.audio_token_id
    long_clip = np.ones(int(31.5 * 16000), dtype=np.float32)
    (req,) = build_requests([[1, a, a, a, 2]], [long_clip], spec)
    assert req["prompt_token_ids"] == [1, a, 2]
    wave, rate = req["multi_modal_data"]["audio"]
    assert rate == spec.sampling_rate == 16000
    assert wave.shape == (30 * 16000,)  # what Whisper's 30 s window keeps (spec.max_audio_seconds)
    with pytest.raises(ValueError, match="2 runs of the audio placeholder"):
        build_requests([[a, 1, a]], [long_clip], spec)
    with pytest.raises(ValueError, match="one clip per prompt"):
        build_requests([[a], [a]], [long_clip], spec)
    with pytest.raises(ValueError, match="1-D mono"):
        clip_for_processor(np.zeros((2, 10)), spec)


def test_suppression_bias_covers_placeholder_and_markers():
    tiny = tiny_qwen25_omni_thinker()
    spec = resolve_modality(tiny.model, tokenizer=tiny.tokenizer)
    bias = suppression_bias(spec)
    assert set(bias) == {tiny.audio_token_id, tiny.audio_start_token_id, tiny.audio_end_token_id}
    assert all(v <= -1e4 for v in bias.values())


def test_check_prompt_ids_names_the_mismatch():
    check_prompt_ids([[1, 2, 3]], [[1, 2, 3]])
    with pytest.raises(RuntimeError, match="first difference at position 2"):
        check_prompt_ids([[1, 2, 3, 3]], [[1, 2, 4, 3, 3]])


def _saved_keys(model, tmp_path) -> set[str]:
    model.save_pretrained(tmp_path)
    keys = set()
    for f in tmp_path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            keys |= set(fh.keys())
    return keys


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen25_omni", "qwen3_omni"])
def test_vllm_names_are_the_checkpoint_names(family, tmp_path):
    """Live names -> what save_pretrained writes (+ ``thinker.`` for the Omni thinkers, vLLM's full-Omni layout)."""
    if family == "qwen2_audio":
        model, prefix = tiny_qwen2_audio_for_vllm()[0], ""
    else:
        factory = tiny_qwen25_omni_thinker if family == "qwen25_omni" else tiny_qwen3_omni_thinker
        model, prefix = factory().model, "thinker."
    named = vllm_state_dict(model)
    assert {prefix + k for k in _saved_keys(model, tmp_path / "hf")} == {n for n, _ in named}
    if family == "qwen3_omni":  # fused 3-D experts are split into per-expert checkpoint tensors
        assert any(".mlp.experts.0.gate_proj.weight" in n for n, _ in named)
    # the weights round-trip through the file the server reloads
    path = save_vllm_weights(named, str(tmp_path / "sync"))
    with safe_open(path, "pt") as fh:
        for name, tensor in named[:5]:
            assert torch.equal(fh.get_tensor(name), tensor)


def test_to_vllm_names_takes_trls_peft_stripped_names():
    model, _ = tiny_qwen2_audio_for_vllm()
    names = dict(to_vllm_names(model, model.named_parameters()))
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in names
    assert "audio_tower.conv1.weight" in names and "language_model.lm_head.weight" in names


def test_logp_drift_against_a_naive_mean():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    mask = rng.integers(0, 2, size=(3, 5))
    b[0, 0] = np.nan
    mask[0, 0] = 1
    total, count = logp_drift(torch.tensor(a), torch.tensor(b), torch.tensor(mask))
    keep = (mask == 1) & ~np.isnan(b)
    assert count.item() == keep.sum()
    assert total.item() == pytest.approx(np.abs(a - b)[keep].sum())


def test_options_and_engine_dtype():
    class Args:
        vllm_weight_sync = "nccl"
        vllm_llm_kwargs = '{"enforce_eager": true}'
        bf16 = True

    options = VLLMAudioOptions.from_args(Args())
    assert options.vllm_weight_sync == "nccl" and options.vllm_llm_kwargs == {"enforce_eager": True}
    assert options.vllm_drift_tolerance == 0.05
    Args.vllm_weight_sync = "ipc"
    with pytest.raises(ValueError, match="vllm_weight_sync must be one of"):
        VLLMAudioOptions.from_args(Args())
    model, _ = tiny_qwen2_audio_for_vllm()
    assert engine_dtype(model, Args()) == "bfloat16"  # fp32 master weights under bf16 autocast
    Args.bf16 = False
    assert engine_dtype(model, Args()) == "float32"


def _bare_engine(model=None, spec=None):
    """An ``AudioVLLMGeneration`` without an engine (no vLLM): for its pure methods."""
    from trl.distributed import DistributedBackend

    from mapo.trainer.rollout.engine import AudioVLLMGeneration

    engine = object.__new__(AudioVLLMGeneration)
    engine.model, engine.modality = model, spec

    class _State:
        deepspeed_plugin = None

    class _Accelerator:
        state = _State()

    engine._dist = DistributedBackend(_Accelerator())
    return engine


def test_server_placeholder_count_mismatch_fails_loudly():
    """The server's processor expanding a clip to another length than the trainer's (3000 vs 3001 mel frames)."""
    model, processor = tiny_qwen2_audio_for_vllm()
    spec = resolve_modality(model, tokenizer=processor.tokenizer)
    engine = _bare_engine(model, spec)
    a = spec.audio_token_id
    other = next(t for t in range(100, 200) if t != a)
    ids = [other, other, *[a] * 25, other]
    features = {"mm_placeholders": {"audio": [{"offset": 40, "length": 25}]}, "mm_hashes": {}}
    placed = engine._place_audio(features, ids)
    assert placed["mm_placeholders"]["audio"] == [{"offset": 2, "length": 25}]
    features["mm_placeholders"]["audio"][0]["length"] = 26
    with pytest.raises(RuntimeError, match="3000 vs 3001"):
        engine._place_audio(features, ids)


def test_lora_sync_sends_out_of_place_merged_weights_under_vllm_names():
    """With a PEFT policy the engine sends W + ΔW (``mapo.trainer.lora.merged_weights``) under vLLM's names —
    the same tensors as a merged copy of the model — and leaves the base weights untouched (no merge/unmerge)."""
    import copy

    from peft import LoraConfig, get_peft_model

    model, _ = tiny_qwen2_audio_for_vllm()
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]
    )
    plain = dict(vllm_state_dict(model))
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
            if "modules_to_save" in name:
                p.add_(1.0)  # the trained copy differs from the original
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    sent = dict(_bare_engine(peft_model)._iter_named_params())
    assert all(torch.equal(p, frozen[n]) for n, p in peft_model.named_parameters())  # bit for bit

    expected = dict(vllm_state_dict(copy.deepcopy(peft_model).merge_and_unload()))
    assert set(sent) == set(expected)
    for name, tensor in expected.items():
        assert torch.allclose(sent[name], tensor, atol=1e-6), name
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(sent[q], plain[q])  # the adapter is in it
    head = "language_model.lm_head.weight"
    assert torch.equal(sent[head], frozen["base_model.model.lm_head.modules_to_save.default.weight"])


def test_server_weight_sync_is_chosen_from_the_trainer_device():
    """auto: NCCL on a CUDA trainer, save + reload elsewhere; NCCL asked for on a CPU trainer is refused."""
    from mapo.trainer.rollout.engine import VLLMAudioOptions

    engine = _bare_engine()

    class _Accelerator:
        device = torch.device("cpu")

    engine.accelerator = _Accelerator()
    engine.options = VLLMAudioOptions()
    assert engine._choose_server_sync() == "reload"
    engine.options = VLLMAudioOptions(vllm_weight_sync="nccl")
    with pytest.raises(ValueError, match="needs the trainer on a CUDA device"):
        engine._choose_server_sync()
    _Accelerator.device = torch.device("cuda", 0)  # only the device type is read
    assert engine._choose_server_sync() == "nccl"
    engine.options = VLLMAudioOptions()
    assert engine._choose_server_sync() == "nccl"
    engine.options = VLLMAudioOptions(vllm_weight_sync="reload")
    assert engine._choose_server_sync() == "reload"


def test_lora_sync_of_qwen3_omni_fused_experts_in_bf16():
    """Qwen3-Omni with expert LoRA (peft target_parameters) in bf16: the engine sends the merged experts split per
    expert under vLLM's ``thinker.`` names, equal to what merging a copy gives, and never rounds the frozen base
    experts (a merge/unmerge round trip in bf16 does). vLLM's CPU engine cannot load experts, so this payload is
    what runs on GPU."""
    import copy

    from peft import LoraConfig, get_peft_model

    from mapo.trainer.lora import expert_target_parameters

    model = tiny_qwen3_omni_thinker().model.to(torch.bfloat16)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        target_parameters=expert_target_parameters(model),
    )
    plain = {n: t.clone() for n, t in vllm_state_dict(model)}
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    sent = dict(_bare_engine(peft_model)._iter_named_params())
    assert all(torch.equal(p, frozen[n]) for n, p in peft_model.named_parameters())

    expected = dict(vllm_state_dict(copy.deepcopy(peft_model).merge_and_unload()))
    assert set(sent) == set(expected)
    expert = next(n for n in sent if ".mlp.experts.0.gate_proj.weight" in n)
    assert expert.startswith("thinker.")
    for name, tensor in expected.items():
        torch.testing.assert_close(sent[name], tensor, rtol=1e-2, atol=1e-2, msg=name)  # bf16 merge order
    assert not torch.equal(sent[expert], plain[expert])  # the expert adapter is in it
