"""LoRA on the fused MoE experts of Qwen3-Omni (peft target_parameters), target checks, and merging for phase 2."""

from __future__ import annotations

import pathlib

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from trl import ModelConfig, get_peft_config

from mapo.modality import load_policy_model
from mapo.testing import real_shape_model, tiny_qwen3_omni_processor, tiny_qwen3_omni_thinker
from mapo.trainer import MAPOTrainer
from mapo.trainer.lora import (
    check_lora,
    expert_target_parameters,
    fused_expert_parameters,
    merged_weights,
    with_expert_rank,
)

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
SHIPPED_LORA = {
    "qwen2_audio_7b_instruct_lora.yaml": "qwen2_audio_7b",
    "qwen2_5_omni_7b_thinker.yaml": "qwen2_5_omni_7b_thinker",
    "qwen3_omni_30b_a3b_thinking_phase1_lora.yaml": "qwen3_omni_30b_a3b_thinker",
}
MODEL_FIELDS = set(ModelConfig.__dataclass_fields__)


def shipped_peft_config(name: str) -> LoraConfig:
    """The LoraConfig `mapo train --config configs/NAME` builds (TRL's get_peft_config + the expert rank)."""
    raw = yaml.safe_load((CONFIGS / name).read_text())
    model_args = ModelConfig(**{k: v for k, v in raw.items() if k in MODEL_FIELDS})
    return with_expert_rank(
        get_peft_config(model_args), raw.get("lora_expert_r"), raw.get("lora_expert_alpha")
    )


def param_wrappers(peft_model) -> dict[str, torch.nn.Module]:
    """peft's ParamWrapper modules by the name of the stack they adapt (read directly from peft's modules)."""
    out = {}
    for name, module in peft_model.get_base_model().named_modules():
        if type(module).__name__ == "ParamWrapper":
            out[name.replace(".base_layer", "") + "." + module.parameter_name] = module
    return out


# ----------------------------------------------------------------------------------------------------------------
# The shipped configs against the real architectures (built on the meta device: no memory, no download)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", sorted(SHIPPED_LORA))
def test_shipped_lora_targets_match_the_real_architecture(config_name):
    peft_config = shipped_peft_config(config_name)
    model = real_shape_model(SHIPPED_LORA[config_name], device="meta")
    check_lora(model, peft_config)  # raises on a target that matches nothing or on missed experts
    # Independently: every listed target names a module of the language model (not only of an encoder).
    lm_modules = [
        n for n, _ in model.named_modules() if "language_model" in n or n.startswith("model.layers")
    ]
    for target in peft_config.target_modules:
        assert any(n.endswith("." + target) for n in lm_modules), (
            f"{config_name}: {target} matches no LM module"
        )
    experts = fused_expert_parameters(model)
    if "qwen3" in config_name:
        assert len(experts) == 2 * 48
        assert set(peft_config.target_parameters) == set(expert_target_parameters(model))
    else:
        assert experts == {} and not peft_config.target_parameters


def test_shipped_moe_lora_config_gives_every_expert_stack_its_rank():
    """The 30B config applied on the meta device (2 of the 48 layers, for speed; every layer has the same shapes):
    every expert stack gets rank 16 per expert, attention r 128."""
    peft_config = shipped_peft_config("qwen3_omni_30b_a3b_thinking_phase1_lora.yaml")
    model = real_shape_model("qwen3_omni_30b_a3b_thinker", device="meta", num_layers=2)
    with pytest.warns(RuntimeWarning, match="rank_pattern keys did not match any targeted module"):
        peft_model = get_peft_model(model, peft_config)
    wrappers = param_wrappers(peft_model)
    assert sorted(wrappers) == sorted(fused_expert_parameters(peft_model))
    layer0 = peft_model.get_base_model().model.language_model.layers[0]
    gate_up = wrappers["model.language_model.layers.0.mlp.experts.gate_up_proj"]
    assert gate_up.r["default"] == 16 and gate_up.scaling["default"] == 4.0
    assert tuple(gate_up.lora_A["default"].weight.shape) == (
        16 * 128,
        2048,
    )  # rank 16 for each of 128 experts
    assert tuple(gate_up.lora_B["default"].weight.shape) == (2 * 768, 16 * 128)
    assert layer0.self_attn.q_proj.r["default"] == 128 and layer0.self_attn.q_proj.scaling["default"] == 4.0
    expert = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n and ".experts" in n)
    # rank 16 x 128 experts x (in + out) of both stacks, per layer: x 48 layers = 629 M in the 30B model
    assert expert == 2 * 128 * 16 * ((2048 + 2 * 768) + (768 + 2048))


# ----------------------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------------------


def test_moe_lora_with_dense_targets_is_refused_with_the_fix():
    model = tiny_qwen3_omni_thinker().model
    dense = LoraConfig(
        r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    with pytest.raises(ValueError) as err:
        check_lora(model, dense)
    msg = str(err.value)
    assert "['down_proj', 'gate_proj', 'up_proj'] match no module" in msg
    assert "8 expert weight stacks" not in msg  # tiny: 2 layers x 2 stacks
    assert "4 expert weight stacks" in msg
    assert "lora_target_parameters: [mlp.experts.down_proj, mlp.experts.gate_up_proj]" in msg
    assert "lora_dropout: 0.0" in msg


def test_moe_lora_on_attention_only_is_refused_through_the_trainer(tmp_path, varied_rewards, tiny_config):
    tiny = tiny_qwen3_omni_thinker()
    with pytest.raises(ValueError, match="would get no adapter. Add lora_target_parameters"):
        MAPOTrainer(
            model=tiny.model,
            reward_funcs=varied_rewards,
            args=tiny_config(tmp_path),
            processing_class=tiny_qwen3_omni_processor(),
            peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )


def test_expert_targets_with_dropout_or_typos_are_refused():
    model = tiny_qwen3_omni_thinker().model
    with pytest.raises(ValueError, match="Set lora_dropout: 0.0"):
        check_lora(model, LoraConfig(r=4, target_parameters=["mlp.experts.gate_up_proj"], lora_dropout=0.05))
    with pytest.raises(
        ValueError, match=r"lora_target_parameters \['mlp.experts.gate_proj'\] match no parameter"
    ):
        check_lora(model, LoraConfig(r=4, target_parameters=["mlp.experts.gate_proj"], lora_dropout=0.0))
    with pytest.warns(UserWarning, match="LoRA reaches 2 of 4 fused expert stacks"):
        check_lora(model, LoraConfig(r=4, target_parameters=["mlp.experts.down_proj"], lora_dropout=0.0))


def test_already_wrapped_moe_model_without_expert_adapters_is_refused():
    model = get_peft_model(tiny_qwen3_omni_thinker().model, LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="reach none of its 4 fused MoE expert stacks"):
        check_lora(model)


def test_expert_rank_needs_expert_targets():
    with pytest.raises(ValueError, match="lora_target_parameters is empty"):
        with_expert_rank(LoraConfig(r=4, target_modules=["q_proj"]), r=2)
    with pytest.raises(ValueError, match="set use_peft: true"):
        with_expert_rank(None, r=2)


# ----------------------------------------------------------------------------------------------------------------
# One MAPO step on a tiny Qwen3-Omni MoE thinker with the shipped LoRA config, then merging for phase 2
# ----------------------------------------------------------------------------------------------------------------


def _inputs(tiny, processor):
    from mapo.testing import sine_clip

    conversation = [
        {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Low or high?"}]}
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    return processor(text=[text], audio=[sine_clip(300.0, 1.0)], return_tensors="pt")


@pytest.fixture(scope="module")
def trained_moe(tmp_path_factory, varied_rewards, tiny_config, audio_rows):
    from datasets import Dataset

    tiny = tiny_qwen3_omni_thinker()
    processor = tiny_qwen3_omni_processor()
    base_state = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    tmp = tmp_path_factory.mktemp("moe")
    trainer = MAPOTrainer(
        model=tiny.model,
        reward_funcs=varied_rewards,
        args=tiny_config(tmp, max_steps=1),
        train_dataset=Dataset.from_list(audio_rows(1)),
        processing_class=processor,
        peft_config=shipped_peft_config("qwen3_omni_30b_a3b_thinking_phase1_lora.yaml"),
    )
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {n: w.lora_B["default"].weight.detach().clone() for n, w in param_wrappers(model).items()}
    trainer.train()
    return model, processor, tiny, before, base_state, tmp


def test_one_mapo_step_trains_every_expert_adapter(trained_moe):
    model, _, _, before, _, _ = trained_moe
    wrappers = param_wrappers(model)
    experts = fused_expert_parameters(model)
    assert len(experts) == 4 and sorted(wrappers) == sorted(experts)  # every expert stack has an adapter
    for name, wrapper in wrappers.items():
        a, b = wrapper.lora_A["default"].weight, wrapper.lora_B["default"].weight
        assert a.requires_grad and b.requires_grad, name
        assert not getattr(wrapper.get_base_layer(), wrapper.parameter_name).requires_grad  # base frozen
        n_experts, r = wrapper.num_experts, wrapper.r["default"]
        assert r == 16 and a.shape[0] == r * n_experts
        changed = (b.detach() - before[name]).abs()
        # peft's layout: expert e owns columns e, E+e, 2E+e, ... of lora_B (reshape(out, r, E)).
        per_expert = [changed[:, e::n_experts].sum().item() for e in range(n_experts)]
        assert all(c > 0 for c in per_expert), (
            f"{name}: expert adapters unchanged by the MAPO step: {per_expert}"
        )


def test_merged_expert_weights_equal_base_plus_delta(trained_moe):
    model, processor, tiny, _, base_state, tmp = trained_moe
    merged = dict(merged_weights(model))
    for name, wrapper in param_wrappers(model).items():
        a = wrapper.lora_A["default"].weight.detach()
        b = wrapper.lora_B["default"].weight.detach()
        n_experts, r, scale = wrapper.num_experts, wrapper.r["default"], wrapper.scaling["default"]
        w0 = base_state[name]
        expected = torch.stack(
            [w0[e] + scale * b[:, e::n_experts] @ a[e * r : (e + 1) * r] for e in range(n_experts)]
        )  # naive per-expert W_e + (α/r)·B_e A_e, in the stack's (E, out, in) layout
        assert (expected - w0).abs().max() > 1e-6, "the trained delta must be non-zero"
        torch.testing.assert_close(merged[name], expected, rtol=1e-5, atol=1e-6)
    # The model is untouched by merged_weights (out of place).
    for name, wrapper in param_wrappers(model).items():
        torch.testing.assert_close(
            getattr(wrapper.get_base_layer(), wrapper.parameter_name), base_state[name]
        )

    # The same function as the adapted model: merged weights loaded into a fresh model give the same logits.
    inputs = _inputs(tiny, processor)
    model.eval()
    with torch.no_grad():
        adapted = model(**inputs).logits
    fresh = tiny_qwen3_omni_thinker().model
    fresh.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).logits, adapted, rtol=1e-4, atol=1e-4)

    # Checkpoint layout (per-expert weights, what save_pretrained writes and inference engines load).
    from safetensors.torch import load_file

    fresh.save_pretrained(tmp / "fresh")
    on_disk = load_file(tmp / "fresh" / "model.safetensors")
    checkpoint = dict(merged_weights(model, checkpoint_format=True))
    assert sorted(checkpoint) == sorted(on_disk)
    assert any(".experts.3.up_proj.weight" in k for k in checkpoint)
    for k, v in on_disk.items():
        torch.testing.assert_close(checkpoint[k], v)

    # Phase 2: merge_and_unload (what `mapo train` saves under OUTPUT_DIR/merged), saved and reloaded.
    unloaded = model.merge_and_unload()
    unloaded.save_pretrained(tmp / "merged")
    reloaded = load_policy_model(str(tmp / "merged"))
    for name in [k for k in merged if ".mlp.experts." in k]:
        torch.testing.assert_close(reloaded.state_dict()[name], merged[name], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, adapted, rtol=1e-4, atol=1e-4)


def test_in_place_merge_unmerge_drifts_bf16_experts_but_merged_weights_does_not():
    """Why merged_weights computes out of place: a bf16 merge_adapter / unmerge_adapter round trip (what a weight
    sync by in-place merging does) rounds W + ΔW - ΔW back to a different W, so the frozen experts drift."""
    model = tiny_qwen3_omni_thinker().model.to(torch.bfloat16)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_parameters=expert_target_parameters(model), lora_dropout=0.0),
    )
    with torch.no_grad():
        for wrapper in param_wrappers(peft_model).values():
            wrapper.lora_B["default"].weight.normal_(0, 0.5)  # a trained-looking, non-zero delta
    stacks = fused_expert_parameters(peft_model)
    base = dict(peft_model.get_base_model().named_parameters())
    key = {n: next(k for k in base if k.replace(".base_layer", "") == n) for n in stacks}
    before = {n: base[key[n]].detach().clone() for n in stacks}
    merged = dict(merged_weights(peft_model))
    assert all(torch.equal(base[key[n]], before[n]) for n in stacks)  # out of place: untouched
    assert all(not torch.equal(merged[n], before[n]) for n in stacks)
    peft_model.merge_adapter()
    peft_model.unmerge_adapter()
    drifted = [n for n in stacks if not torch.equal(base[key[n]], before[n])]
    assert drifted, "expected bf16 rounding to change the base experts after an in-place merge/unmerge"
