"""Outcome-reward RL on the collapsed tone-melody model with the library's real trainers (GRPO, mask-only, MAPO).

Every arm starts from the same warmed-up model, sees the same prompts (``task.rl``: half trap items) in the same
order with the same seed, and gets the same rewards, the paper's eq. 6 with λ = 2/1/1: answer accuracy, format
and the offline consistency reward (``mapo.synthetic.rewards``: complete chain, answer = its last note; the role of
the LLM judge). Supervised chains are never used: they cure any model trivially
(``docs/synthetic.md``, notes for the RL demo).

The recipe (``docs/synthetic.md``, "RL on the collapsed model", has the diagnosis and every design tried, all on
seeds ≥ 100): lr 2e-4 constant and β = 0.1 (k3 KL to the warmed-up model) for every arm. Without the KL anchor
(the previous recipe: lr 3e-4, β = 0) the tokens the reward does not pin down drift — on trap items outcome rewards
even *pay* for misreading an early note — and in-prior accuracy collapsed within 20 steps. MAPO's own
hyper-parameters are the paper's Table 5 values (the attention loss on the last five decoder layers — both layers
of this model — as the evaluation's a_t) except η = 0.45: the paper's 0.1 moved late attention too little in 200
steps; a larger η widens MAPO's late-attention margin over GRPO but costs in-prior accuracy unless the KL anchor
grows with it (η = 0.25 needed β = 0.08; η = 0.45 with β = 0.1 kept in-prior accuracy within 0.03 of the base on
six tuning seeds and lifted the smallest late/early margin from +0.13 to +0.24, "η and β together" in the doc).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

from ..rewards import accuracy_reward, format_reward
from ..trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer
from .evaluate import evaluate
from .rewards import synthetic_consistency_reward
from .task import SyntheticTask, prompt_of

__all__ = ["ARMS", "RL_BUDGETS", "ArmResult", "RLBudget", "run_arm"]


@dataclass(frozen=True)
class RLBudget:
    """Size and hyper-parameters of one RL arm (the same for every arm; tuning record: docs/synthetic.md)."""

    steps: int
    prompts_per_step: int = 8
    num_generations: int = 8
    learning_rate: float = 2e-4
    max_completion_length: int = 24
    temperature: float = 1.0
    eval_every: int = 40
    curve_items: int = 50  #: prior and trap items each, evaluated along the run
    #: β of the k3 KL to the warmed-up model (eq. 5). It anchors the tokens the reward does not constrain (the
    #: early notes, the in-prior chains); with β = 0 they drift and in-prior accuracy collapsed. It grows with η:
    #: the attention loss pulls on the chain tokens too, and at η = 0.35 with β = 0.08 one tuning seed lost 0.05
    #: of in-prior accuracy (docs/synthetic.md, "η and β together").
    beta: float = 0.1
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = 0.0
    num_iterations: int = 1  #: optimiser passes over each generation batch (TRL's μ)
    reward_weights: tuple[float, ...] = (2.0, 1.0, 1.0)  #: λ of (accuracy, format, consistency), eq. 6
    eta: float = 0.45  #: η of the MAPO arm's attention loss (eq. 5); the mask-only arm always uses 0
    #: decoder layers the attention loss targets; None = MAPOConfig's default, the last five (here: both layers)
    target_layers: tuple[int, ...] | None = None


RL_BUDGETS: dict[str, RLBudget] = {
    "quick": RLBudget(steps=24, prompts_per_step=4, eval_every=12, curve_items=25),
    "default": RLBudget(steps=200, prompts_per_step=8, eval_every=40, curve_items=50),
}

#: arm name -> (label, trainer class, MAPOConfig overrides)
ARMS: dict[str, tuple[str, type, dict[str, Any]]] = {
    "grpo": ("GRPO", AudioGRPOTrainer, {}),
    "mask_only": ("MAPO mask only (η = 0)", MAPOTrainer, {"eta": 0.0}),
    "mapo": ("MAPO", MAPOTrainer, {}),
}


@dataclass
class ArmResult:
    """What one arm produced: its final evaluation, its accuracy curve and the trainer's logged metrics."""

    arm: str
    metrics: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)
    logs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("records")
        return out


class _QuietProgress(ProgressCallback):
    """TRL's progress bar without printing every logged dict under it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class _Curve(TrainerCallback):
    """Greedy evaluation on a fixed subset every ``every`` steps (the accuracy-curve plot)."""

    def __init__(self, processor, rows, every: int, text_reference, sink: list):
        self.processor, self.rows, self.every = processor, rows, every
        self.text_reference, self.sink = text_reference, sink

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            m = evaluate(model, self.processor, self.rows, text_reference=self.text_reference)
            self.sink.append(
                {
                    "step": state.global_step,
                    "prior_acc": m["prior/answer_acc"],
                    "trap_acc": m["trap/answer_acc"],
                    "trap_late_note_acc": m["trap/late_note_acc"],
                    "trap_attn_ratio": m["trap/attn_ratio"],
                }
            )


def _dataset(rows: Sequence[dict]):
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": prompt_of(r),
                "answer": r["answer"],
                "choices": r["choices"],
                "notes": r["notes"],
                "id": r["id"],
            }
            for r in rows
        ]
    )


def run_arm(
    arm: str,
    base_model,
    processor,
    task: SyntheticTask,
    budget: RLBudget,
    seed: int,
    output_dir: str,
    eval_rows: Sequence[dict],
    progress: bool = True,
    on_done: Callable[[ArmResult], None] | None = None,
) -> ArmResult:
    """Train a copy of ``base_model`` with one arm and evaluate it (Δh against the frozen base, MAPO's π_text-ref)."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {sorted(ARMS)}, got {arm!r}")
    if not task.rl:
        raise ValueError("task has no RL split: build it with make_task(..., n_rl=...)")
    _, trainer_cls, overrides = ARMS[arm]
    if trainer_cls is MAPOTrainer:
        layers = {} if budget.target_layers is None else {"target_layers": list(budget.target_layers)}
        overrides = {**layers, "eta": budget.eta, **overrides}
    model = copy.deepcopy(base_model).train()
    reference = copy.deepcopy(base_model).eval()
    args = MAPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=budget.prompts_per_step * budget.num_generations,
        num_generations=budget.num_generations,
        max_completion_length=budget.max_completion_length,
        max_steps=budget.steps,
        learning_rate=budget.learning_rate,
        lr_scheduler_type=budget.lr_scheduler_type,
        warmup_steps=int(budget.warmup_ratio * budget.steps),
        temperature=budget.temperature,
        top_k=0,
        top_p=1.0,
        beta=budget.beta,
        num_iterations=budget.num_iterations,
        reward_weights=list(budget.reward_weights),
        logging_steps=max(1, budget.steps // 12),
        report_to=[],
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,  # the non-deprecated name (gradient_checkpointing warns)
        save_strategy="no",
        pos_tagger="lexicon",  # NLTK's tagger data cannot be downloaded here; every note name is a NOUN either way
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        **overrides,
    )
    curve_rows = list(task.prior[: budget.curve_items]) + list(task.trap[: budget.curve_items])
    curve: list[dict[str, float]] = []
    trainer = trainer_cls(
        model=model,
        reward_funcs=[accuracy_reward, format_reward, synthetic_consistency_reward],
        args=args,
        train_dataset=_dataset(task.rl),
        processing_class=processor,
        callbacks=[_Curve(processor, curve_rows, budget.eval_every, reference, curve)],
    )
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_QuietProgress)
    start = time.perf_counter()
    torch.manual_seed(seed)
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    metrics = evaluate(model, processor, eval_rows, text_reference=reference, return_records=True)
    records = metrics.pop("records")
    logs = [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in trainer.state.log_history]
    result = ArmResult(arm=arm, metrics=metrics, curve=curve, logs=logs, seconds=seconds, records=records)
    if on_done is not None:
        on_done(result)
    return result
