"""MAPOTrainer: end-to-end runs, exact agreement of the trainer's loss with mapo.objective, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mapo import objective
from mapo.modality import audio_key_mask, completion_logps_and_entropies, text_only_prompt
from mapo.pos_gate import pos_gate_batch
from mapo.probe import naive_audio_attention
from mapo.rewards import accuracy_reward
from mapo.trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer
from mapo.trainer.mapo_trainer import ATTN_COEF_KEY, DELTA_H_KEY, SEQ_ADVANTAGES_KEY

MAPO_METRICS = [
    "mapo/text_ref_entropy",
    "mapo/policy_entropy",
    "mapo/delta_h_mean",
    "mapo/delta_h_abs_mean",
    "mapo/omega_max",
    "mapo/omega_clip_frac",
    "mapo/pos_gate_on_frac",
    "mapo/pos_tagger/lexicon",
    "mapo/failed_frac",
    "mapo/prefactor_mean",
    "mapo/audio_mass_mean",
    "mapo/audio_mass_first_half",
    "mapo/audio_mass_second_half",
    "mapo/attn_loss",
]


@pytest.fixture
def make_trainer(rewards):
    """Factory: a trainer of class ``cls`` with the accuracy and format rewards."""

    def make(cls, model, processor, dataset, args):
        return cls(
            model=model, reward_funcs=rewards, args=args, train_dataset=dataset, processing_class=processor
        )

    return make


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen25_omni"])
def test_two_mapo_steps_log_every_metric(family, request, tmp_path, rows_dataset, make_trainer, tiny_config):
    model, processor = request.getfixturevalue(family)
    args = tiny_config(tmp_path, beta=0.01, gradient_checkpointing=True)
    trainer = make_trainer(MAPOTrainer, model, processor, rows_dataset, args)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        missing = [k for k in MAPO_METRICS if k not in h]
        assert not missing, f"metrics not logged: {missing}"
        assert 0.0 <= h["mapo/audio_mass_mean"] <= 1.0
        assert h["mapo/attn_loss"] > 0 and np.isfinite(h["loss"])


def test_eta_zero_mask_only_runs_without_attention_branch(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, tiny_config
):
    model, processor = qwen2_audio
    trainer = make_trainer(MAPOTrainer, model, processor, rows_dataset, tiny_config(tmp_path, eta=0.0))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and "mapo/omega_max" in logs[0]
    assert "mapo/attn_loss" not in logs[0] and "mapo/pos_gate_on_frac" not in logs[0]


@pytest.fixture
def make_batch(audio_rows, repeat_rows):
    """Factory: one generation batch of ``trainer`` (one prompt, G = 4) after seeding torch with ``seed``."""

    def make(trainer, seed=0):
        torch.manual_seed(seed)
        return trainer._generate_and_score_completions(repeat_rows(audio_rows(1), 4))

    return make


def test_mask_off_eta_zero_is_exactly_audio_grpo(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, make_batch, tiny_config
):
    model, processor = qwen2_audio
    grpo = make_trainer(
        AudioGRPOTrainer, copy.deepcopy(model), processor, rows_dataset, tiny_config(tmp_path)
    )
    mapo = make_trainer(
        MAPOTrainer,
        copy.deepcopy(model),
        processor,
        rows_dataset,
        tiny_config(tmp_path, eta=0.0, use_relevance_mask=False),
    )
    batch_g, batch_m = make_batch(grpo), make_batch(mapo)
    torch.testing.assert_close(batch_g["completion_ids"], batch_m["completion_ids"], rtol=0, atol=0)
    torch.testing.assert_close(batch_g["advantages"], batch_m["advantages"], rtol=0, atol=0)
    assert (
        abs(grpo._compute_loss(grpo.model, batch_g).item() - mapo._compute_loss(mapo.model, batch_m).item())
        <= 1e-6
    )


def test_all_ones_weights_folded_into_advantages_reproduce_trl_grpo(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, make_batch, tiny_config
):
    model, processor = qwen2_audio
    trainer = make_trainer(AudioGRPOTrainer, model, processor, rows_dataset, tiny_config(tmp_path))
    batch = make_batch(trainer)
    batch["advantages"] = torch.tensor([1.5, -0.5, 0.25, -1.25])  # non-trivial advantages
    mask = batch["completion_mask"].float()
    folded = dict(batch, advantages=objective.fold_weights_into_advantages(batch["advantages"], mask, mask))
    loss = trainer._compute_loss(trainer.model, batch)
    loss_folded = trainer._compute_loss(trainer.model, folded)
    assert abs(loss.item() - loss_folded.item()) <= 1e-6


def _independent_entropies(model, batch, spec, pad_id, temperature, with_audio):
    """Δh's two entropies computed outside the trainer (token_stats, full-precision chunked head)."""
    c = batch["completion_ids"].size(1)
    if with_audio:
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        audio = {k: batch[k] for k in ("input_features", "feature_attention_mask")}
        return completion_logps_and_entropies(model, ids, mask, c, temperature=temperature, **audio)
    t_ids, t_mask = text_only_prompt(batch["prompt_ids"], batch["prompt_mask"], spec, pad_token_id=pad_id)
    ids = torch.cat([t_ids, batch["completion_ids"]], 1)
    mask = torch.cat([t_mask, batch["completion_mask"]], 1)
    return completion_logps_and_entropies(model, ids, mask, c, temperature=temperature)


def test_policy_loss_is_eq2_with_omega_from_independent_delta_h(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, make_batch, tiny_config, sharpen
):
    model, processor = qwen2_audio
    sharpen(model)
    initial = copy.deepcopy(model)
    args = tiny_config(tmp_path, eta=0.0, tau_base=0.2)  # a small τ makes ω̃ far from uniform on tiny models
    trainer = make_trainer(MAPOTrainer, model, processor, rows_dataset, args)
    batch = make_batch(trainer)
    mask = batch["completion_mask"].float()
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        _, h_text = _independent_entropies(initial, batch, trainer.modality, pad, args.temperature, False)
        _, h_pol = _independent_entropies(initial, batch, trainer.modality, pad, args.temperature, True)
    delta_h = (h_text - h_pol) * mask
    omega = objective.relevance_mask(delta_h, mask, tau_base=args.tau_base, mask_clip=args.mask_clip)
    assert (omega[mask.bool()] - 1).abs().max() > 0.05, "the test needs a non-uniform ω̃"

    loss = trainer._compute_loss(trainer.model, batch)
    torch.testing.assert_close(batch[DELTA_H_KEY], delta_h, atol=2e-5, rtol=1e-4)
    logps, _ = _independent_entropies(trainer.model, batch, trainer.modality, pad, args.temperature, True)
    expected = objective.policy_gradient_loss(logps, logps.detach(), batch[SEQ_ADVANTAGES_KEY], omega, mask)
    assert abs(loss.item() - expected.item()) <= 1e-5


def test_attention_term_equals_eq4_with_naive_attention_mass(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, make_batch, tiny_config, sharpen
):
    model, processor = qwen2_audio
    sharpen(model)
    args = tiny_config(tmp_path, eta=0.5, target_layers=[0, 1])
    trainer = make_trainer(MAPOTrainer, model, processor, rows_dataset, args)
    batch = make_batch(trainer)
    mask = batch["completion_mask"].float()
    loss_with = trainer._compute_loss(trainer.model, batch)
    trainer.args.eta = 0.0
    loss_without = trainer._compute_loss(trainer.model, batch)
    trainer.args.eta = 0.5

    # The coefficients from independent pieces: the POS gate, the raw accuracy reward, the sequence advantages.
    ids_lists = [r[m.bool()].tolist() for r, m in zip(batch["completion_ids"], batch["completion_mask"])]
    gate, _ = pos_gate_batch(ids_lists, processor.tokenizer, tagger="lexicon", pad_to=mask.size(1))
    texts = processor.tokenizer.batch_decode(ids_lists, skip_special_tokens=True)
    acc = accuracy_reward(completions=texts, answer=["low"] * 4, choices=[["low", "high"]] * 4)
    failed = torch.tensor([a <= 0.0 for a in acc])
    coef = objective.attention_coefficients(
        batch[DELTA_H_KEY],
        gate * mask,
        batch[SEQ_ADVANTAGES_KEY],
        failed,
        mask,
        tau_base=1.0,
        mask_clip=5.0,
        kappa=1.0,
        fail_gate_floor=0.1,
        advantage_floor=0.1,
        prefactor_clip=3.0,
    )
    torch.testing.assert_close(batch[ATTN_COEF_KEY], coef, atol=1e-6, rtol=1e-6)

    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    p, c = batch["prompt_ids"].size(1), batch["completion_ids"].size(1)
    query = torch.zeros_like(ids, dtype=torch.bool)
    query[:, p - 1 : p - 1 + c] = batch["completion_mask"].bool()
    keys = audio_key_mask(ids, trainer.modality)
    with torch.no_grad(), naive_audio_attention(model, keys, attn, query, target_layers=[0, 1]) as cap:
        model(
            input_ids=ids,
            attention_mask=attn,
            input_features=batch["input_features"],
            feature_attention_mask=batch["feature_attention_mask"],
        )
    a_naive = cap.mass[:, p - 1 : p - 1 + c]
    expected = 0.5 * objective.attention_loss_from_coefficients(a_naive, coef)
    assert abs((loss_with - loss_without).item() - expected.item()) <= 1e-5


def test_attention_loss_gradient_reaches_query_key_projections(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, make_batch, tiny_config
):
    model, processor = qwen2_audio
    args = tiny_config(tmp_path, eta=1.0, attention_only=True, target_layers=[1])
    trainer = make_trainer(MAPOTrainer, model, processor, rows_dataset, args)
    batch = make_batch(trainer)
    model.zero_grad()
    trainer._compute_loss(trainer.model, batch).backward()
    layer = model.model.language_model.layers[1].self_attn
    assert layer.q_proj.weight.grad.abs().sum() > 0 and layer.k_proj.weight.grad.abs().sum() > 0
    # attention-only: the value path of the target layer gets no gradient from η·L_attn
    assert layer.v_proj.weight.grad is None or layer.v_proj.weight.grad.abs().sum() == 0


def test_lora_uses_adapters_disabled_as_text_reference(
    qwen2_audio, tmp_path, rows_dataset, rewards, tiny_config
):
    from peft import LoraConfig

    model, processor = qwen2_audio
    base_weight = model.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], lora_dropout=0.0
    )
    args = tiny_config(tmp_path, beta=0.01)
    trainer = MAPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=rows_dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    assert trainer._text_ref is None and trainer.ref_model is None  # both references = adapters disabled
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and "mapo/attn_loss" in logs[-1]
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    base = peft_model.get_base_model().model.language_model.layers[0].self_attn.q_proj
    torch.testing.assert_close(base.base_layer.weight, base_weight)  # the frozen base is untouched


# ----------------------------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------------------------


def test_reentrant_checkpointing_with_attention_branch_is_refused(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, tiny_config
):
    model, processor = qwen2_audio
    args = tiny_config(
        tmp_path, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}
    )
    with pytest.raises(ValueError, match="reentrant"):
        make_trainer(MAPOTrainer, model, processor, rows_dataset, args)
    # the mask-only ablation does not need the attention graph
    make_trainer(
        MAPOTrainer,
        model,
        processor,
        rows_dataset,
        tiny_config(
            tmp_path,
            eta=0.0,
            gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": True},
        ),
    )


def test_unknown_failure_gate_reward_is_refused(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, tiny_config
):
    model, processor = qwen2_audio
    with pytest.raises(ValueError, match="accuracy_reward_name='acc'.*accuracy_reward"):
        make_trainer(
            MAPOTrainer, model, processor, rows_dataset, tiny_config(tmp_path, accuracy_reward_name="acc")
        )


def test_text_reference_with_another_vocabulary_is_refused(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, tiny_config
):
    from mapo.testing import tiny_qwen2_audio

    model, processor = qwen2_audio
    other = tiny_qwen2_audio(vocab_size=512, tokenizer=processor.tokenizer)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="vocabulary size 512"):
        make_trainer(
            MAPOTrainer,
            model,
            processor,
            rows_dataset,
            tiny_config(tmp_path, text_reference_model=str(tmp_path / "other")),
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss_type": "dapo"}, "loss_type='dapo'"),
        ({"kappa": -1.0}, "kappa must be"),
        ({"head_reduce": "sum"}, "head_reduce"),
        ({"attention_only": True, "eta": 0.0}, "attention_only"),
        ({"target_layers": [-1]}, "target_layers must be distinct non-negative"),
        ({"target_layers": [1, 1]}, r"target_layers must be distinct .* got \[1, 1\]"),
        ({"target_layers": "0,0"}, r"target_layers must be distinct .* got \[0, 0\]"),
        ({"vllm_weight_sync": "ipc"}, "vllm_weight_sync must be"),
        ({"vllm_drift_tolerance": 0.0}, "vllm_drift_tolerance must be > 0"),
    ],
)
def test_config_validation(tmp_path, overrides, message, tiny_config):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


def test_target_layers_beyond_the_decoder_are_refused_when_the_trainer_is_built(
    qwen2_audio, tmp_path, rows_dataset, make_trainer, tiny_config
):
    """The config cannot know the model's depth; the trainer checks it in __init__, not at the first loss."""
    model, processor = qwen2_audio
    depth = len(model.model.language_model.layers)
    with pytest.raises(ValueError, match=rf"distinct layer indices in \[0, {depth}\).*got \[1, {depth}\]"):
        make_trainer(
            MAPOTrainer, model, processor, rows_dataset, tiny_config(tmp_path, target_layers=[1, depth])
        )


def test_non_grpo_loss_is_allowed_when_asked(tmp_path, tiny_config):
    assert tiny_config(tmp_path, loss_type="dapo", allow_non_grpo_loss=True).loss_type == "dapo"


def test_paper_defaults(tmp_path):
    cfg = MAPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (cfg.eta, cfg.beta, cfg.tau_base, cfg.mask_clip, cfg.kappa) == (0.1, 0.002, 1.0, 5.0, 1.0)
    assert (cfg.advantage_floor, cfg.prefactor_clip, cfg.fail_gate_floor, cfg.fail_threshold) == (
        0.1,
        3.0,
        0.1,
        0.0,
    )
    assert (cfg.loss_type, cfg.epsilon, cfg.num_generations, cfg.temperature) == ("grpo", 0.2, 8, 1.2)
    assert (cfg.top_k, cfg.top_p, cfg.head_reduce, cfg.layer_reduce) == (50, 0.99, "max", "mean")
    assert cfg.pos_tags == ["NOUN", "VERB", "ADJ", "ADV", "NUM", "X"]
