"""Supervised warm-up that builds the tiny audio LM the way real audio LLMs are built, so that it collapses.

A feasibility study made before this package (its findings are rows E5–E6 of ``docs/synthetic.md``) found that a tiny model trained jointly on
clean audio + chain never collapses: reading the audio is easier than using the prior. Collapse appears when the
prior lives in the language model *before* audio arrives. Stages, in order (0 steps skips one):

0. **encoder pretraining** (like a Whisper encoder, pretrained on its own task before any LLM sees it): the audio
   tower + a temporary linear head tag every audio token with the note of its segment. Afterwards every note is
   *available* in the audio embeddings, so a policy that stops listening has something to go back to.
(a) **text-only LM pretraining**: teacher-forced chains of fresh prior-following melodies, prompt = the text-only
    prompt (audio span removed, exactly what the MAPO text-only reference sees); no audio ever.
(b) **alignment**: audio encoder + projector on audio + chain with the whole language model frozen (Qwen2-Audio's
    stage 1). Measured here: the frozen 2-layer LM never learns to *read* the audio this way within budget (the
    loss stays at the text prior's floor), so the tuned recipe skips it (``docs/synthetic.md``).
(c) **short full SFT** on audio + chain (all parameters). The model first learns to read the notes the prior cannot
    predict (notes 1-2) and keeps following the prior for the rest; only much later does it learn to read late
    notes too. Stopping early leaves a model with late-stage modality collapse (the study's P1). With
    ``sft_check_every`` > 0 the stage evaluates a held-out validation split along the way and keeps the last
    checkpoint inside that collapse window (:mod:`mapo.synthetic.collapse_window`).

All stages use the training distribution only (never trap items), plain PyTorch loops over the real model's
forward, AdamW, linear warm-up + cosine decay. Deterministic by ``seed`` for a given torch thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .batching import Encoder, TokenBatch, completion_nll
from .collapse_window import CollapseWindow
from .model import audio_token_count
from .task import NOTE_NAMES, SyntheticTask, completion_text, make_split, question_text, sample_melody

__all__ = ["BUDGETS", "STAGES", "TASK_SIZES", "WarmupBudget", "WarmupReport", "warm_up"]

STAGES: tuple[str, ...] = ("encoder", "text", "align", "sft")


@dataclass(frozen=True)
class WarmupBudget:
    """Steps and learning rates of the four stages (0 steps skips a stage); one batch size for all.

    ``sft_steps`` is the SFT schedule's length (cosine decay over it). With ``sft_check_every`` > 0 the SFT stage
    evaluates ``val_items`` held-out rows (half trap items) every that many steps and keeps the last checkpoint
    inside the collapse window (trap early-note accuracy ≥ ``window_early_min``, share of trap late notes following
    the prior ≥ ``window_follow_min``), stopping once the window has closed (:mod:`mapo.synthetic.collapse_window`).
    If no checkpoint of a whole schedule was inside, SFT restarts from its starting weights with another batch order,
    up to ``sft_attempts`` schedules in all: whether SFT finds the audio at all is chaotic in the batch order
    (``docs/synthetic.md``, "The collapse window").
    """

    encoder_steps: int
    text_steps: int
    align_steps: int
    sft_steps: int
    batch_size: int = 32
    encoder_lr: float = 3e-3
    text_lr: float = 3e-3
    align_lr: float = 3e-3
    sft_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    sft_check_every: int = 0
    val_items: int = 200
    window_early_min: float = 0.9
    window_follow_min: float = 0.7
    sft_attempts: int = 1

    def __post_init__(self) -> None:
        for name in ("encoder_steps", "text_steps", "align_steps", "sft_steps", "sft_check_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sft_attempts < 1:
            raise ValueError(f"sft_attempts must be >= 1, got {self.sft_attempts}")
        if self.sft_check_every and self.val_items < 2:
            raise ValueError(
                f"val_items must be >= 2 (trap and training-distribution items) when sft_check_every > 0, "
                f"got {self.val_items}"
            )
        for name in ("window_early_min", "window_follow_min"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


#: Named budgets used by ``mapo demo`` (``--quick`` → "quick"). Figures and wall times: docs/synthetic.md.
#: The alignment stage is off: with the LM frozen it did not teach the tiny model to read the audio (tuning runs
#: E2, E3, E7, V6), so it only cost time.
BUDGETS: dict[str, WarmupBudget] = {
    "quick": WarmupBudget(
        encoder_steps=100,
        text_steps=600,
        align_steps=0,
        sft_steps=150,
        sft_check_every=25,
        val_items=100,
        sft_attempts=3,
    ),
    "default": WarmupBudget(
        encoder_steps=200,
        text_steps=1500,
        align_steps=0,
        sft_steps=300,
        sft_check_every=25,
        val_items=200,
        sft_attempts=3,
    ),
}
#: ``(n_train, n_eval)`` for :func:`mapo.synthetic.make_task` that go with each budget (feature extraction of the
#: training clips is part of the warm-up's time).
TASK_SIZES: dict[str, tuple[int, int]] = {"quick": (800, 100), "default": (2000, 200)}


@dataclass
class WarmupReport:
    """What the warm-up did: per-stage wall time, final loss (mean of the last 10 % of steps run), loss curves, and
    the collapse-window checks of the SFT stage (``sft_checks``, one dict per check with its ``attempt``;
    ``sft_kept_step``: the step of the last attempt that was kept, ``None`` when the stage kept its last step
    because no check was inside the window or none ran)."""

    budget: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    steps_run: dict[str, int] = field(default_factory=dict)
    sft_checks: list[dict[str, Any]] = field(default_factory=list)
    sft_kept_step: int | None = None

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def _lr_lambda(total: int, warmup_frac: float) -> Callable[[int], float]:
    warm = max(1, int(total * warmup_frac))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.1 + 0.9 * 0.5 * (1.0 + float(np.cos(np.pi * min(progress, 1.0))))

    return f


def _set_trainable(
    model: torch.nn.Module, modules: list[torch.nn.Module], frozen: set[int]
) -> list[torch.nn.Parameter]:
    """Train ``modules`` only; parameters the architecture itself freezes (``frozen``, by ``id``) stay frozen.

    Qwen2-Audio's encoder freezes its sinusoidal position table (``embed_positions``); unfreezing it here would also
    leave the warmed-up model with a different trainable set than the same weights loaded from the cache, and the RL
    arms (whose optimiser takes the trainable parameters) would then differ between a first and a second run.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in modules for p in m.parameters() if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    return params


def _run_stage(
    name: str,
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    budget: WarmupBudget,
    loss_fn: Callable[[int], torch.Tensor],
    report: WarmupReport,
    progress: bool,
    on_step: Callable[[str, int], None] | None,
    check: Callable[[int], bool] | None = None,
    check_every: int = 0,
) -> None:
    """AdamW on ``params`` minimising ``loss_fn(step)`` for ``steps`` steps; records time and losses.

    ``check(steps_done)`` runs every ``check_every`` steps (model in eval mode); True stops the stage there."""
    from tqdm.auto import tqdm

    if steps <= 0:
        return
    start = time.perf_counter()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=budget.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, budget.warmup_frac))
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc=f"warm-up: {name}", disable=not progress, leave=False)
    for step in bar:
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            model.eval()
            on_step(name, step + 1)
            model.train()
        if check is not None and check_every and (step + 1) % check_every == 0:
            model.eval()
            stop = check(step + 1)
            model.train()
            if stop:
                break
    model.eval()
    report.final_loss[name] = float(np.mean(losses[-max(1, len(losses) // 10) :]))
    report.curves[name] = [(i, losses[i]) for i in range(0, len(losses), max(1, steps // 50))]
    # a stage run again (another SFT attempt) adds its steps and time to the first run's
    report.steps_run[name] = report.steps_run.get(name, 0) + len(losses)
    report.seconds[name] = report.seconds.get(name, 0.0) + time.perf_counter() - start


def _token_segments(processor, n_notes: int) -> torch.Tensor:
    """Note index (segment) of each audio token: token j pools mel frames [4j, 4j+4) (conv stride 2, pool 2)."""
    fe = processor.feature_extractor
    n_tok = audio_token_count(fe.nb_max_frames)
    seg = fe.n_samples // n_notes
    centre = [(4 * j + 2) * fe.hop_length for j in range(n_tok)]
    return torch.tensor([min(n_notes - 1, c // seg) for c in centre])


def warm_up(
    model: torch.nn.Module,
    processor,
    task: SyntheticTask,
    budget: str | WarmupBudget = "default",
    seed: int = 0,
    progress: bool = True,
    on_step: Callable[[str, int], None] | None = None,
) -> WarmupReport:
    """Warm up ``model`` in place: encoder pretraining, text-only LM pretraining, (alignment), short full SFT.

    Args:
        model: a ``Qwen2AudioForConditionalGeneration`` from :func:`mapo.synthetic.build_tiny_audio_lm`.
        processor: its processor.
        task: the :class:`~mapo.synthetic.task.SyntheticTask`; the text stage samples fresh melodies from its
            training distribution, the audio stages use ``task.train`` clips (never trap items).
        budget: ``"quick"``, ``"default"`` or a :class:`WarmupBudget`.
        seed: seeds torch and the batch order.
        progress: show tqdm bars.
        on_step: called as ``on_step(stage, steps_done)`` after every optimiser step (model in eval mode), e.g.
            to evaluate along the way.

    Returns a :class:`WarmupReport`; the model is left in eval mode with the trainable set it came with
    (the parameters the architecture freezes, such as the encoder's position table, are never trained).
    """
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {sorted(BUDGETS)} or a WarmupBudget, got {budget!r}")
        budget = BUDGETS[budget]
    needs_audio = budget.encoder_steps or budget.align_steps or budget.sft_steps
    if needs_audio and len(task.train) < budget.batch_size:
        raise ValueError(
            f"task: the audio stages need at least batch_size={budget.batch_size} training rows, "
            f"got {len(task.train)} (make_task(n_train=...))"
        )
    # restored at the end: the warmed-up model has the trainable set of a fresh build (= of a cache load)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 17])  # text melodies, then the batch order
    enc = Encoder(processor)
    report = WarmupReport(budget=asdict(budget))
    bs = budget.batch_size
    inner = model.model  # Qwen2AudioModel: audio_tower, multi_modal_projector, language_model
    run = dict(budget=budget, report=report, progress=progress, on_step=on_step)

    if needs_audio:  # features of the training clips, computed once
        start = time.perf_counter()
        feats, fmask = enc.features([r["audio"] for r in task.train])
        prompts = [enc.prompt_ids(r["question"]) for r in task.train]
        completions = enc.completion_ids([r["completion"] for r in task.train])
        notes = torch.tensor([[NOTE_NAMES.index(n) for n in r["notes"]] for r in task.train])
        report.seconds["features"] = time.perf_counter() - start
    order: list[int] = []

    def next_rows() -> list[int]:
        nonlocal order
        if len(order) < bs:
            order = order + [int(i) for i in rng.permutation(len(task.train))]
        idx, order = order[:bs], order[bs:]
        return idx

    def audio_batch() -> TokenBatch:
        idx = next_rows()
        ix = torch.tensor(idx)
        return enc.batch([prompts[i] for i in idx], [completions[i] for i in idx], (feats[ix], fmask[ix]))

    # 0. encoder pretraining: tag each audio token with its segment's note (temporary linear head)
    if budget.encoder_steps:
        segments = _token_segments(processor, task.config.n_notes)
        head = torch.nn.Linear(inner.audio_tower.config.d_model, len(NOTE_NAMES))

        def encoder_loss(_: int) -> torch.Tensor:
            ix = torch.tensor(next_rows())
            hidden = inner.audio_tower(
                feats[ix]
            ).last_hidden_state  # [B, n_tok, d]; full-length clips, no mask
            target = notes[ix][:, segments]
            return torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), target.flatten())

        params = _set_trainable(model, [inner.audio_tower], frozen) + list(head.parameters())
        _run_stage(
            "encoder", model, params, budget.encoder_steps, budget.encoder_lr, loss_fn=encoder_loss, **run
        )

    # (a) text-only pretraining on fresh prior-following chains (unlimited text, like an LM's corpus)
    text_prompt = enc.text_only_ids(enc.prompt_ids(question_text()))

    def text_loss(_: int) -> torch.Tensor:
        texts = []
        for _ in range(bs):
            idx, _step = sample_melody(rng, task.config)
            texts.append(completion_text([NOTE_NAMES[i] for i in idx]))
        batch = enc.batch([text_prompt] * bs, enc.completion_ids(texts))
        return completion_nll(model(**batch.model_inputs()).logits, batch)

    params = _set_trainable(model, [inner.language_model, model.lm_head], frozen)
    _run_stage("text", model, params, budget.text_steps, budget.text_lr, loss_fn=text_loss, **run)

    def audio_loss(_: int) -> torch.Tensor:
        batch = audio_batch()
        return completion_nll(model(**batch.model_inputs()).logits, batch)

    # (b) alignment: encoder + projector, language model frozen
    params = _set_trainable(model, [inner.audio_tower, inner.multi_modal_projector], frozen)
    _run_stage("align", model, params, budget.align_steps, budget.align_lr, loss_fn=audio_loss, **run)
    # (c) short full SFT, kept at the last checkpoint inside the collapse window when checks are on
    params = _set_trainable(model, [model], frozen)
    if not (budget.sft_steps and budget.sft_check_every):
        _run_stage("sft", model, params, budget.sft_steps, budget.sft_lr, loss_fn=audio_loss, **run)
    else:
        val_rows = make_split(
            seed=task.seed, config=task.config, split="val", n=budget.val_items, trap_fraction=0.5
        )
        start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for attempt in range(budget.sft_attempts):
            if attempt:  # the last schedule never entered the window: start over with another batch order
                model.load_state_dict(start_weights)
                rng, order = np.random.default_rng([seed, 17, attempt]), []
            window = CollapseWindow(
                model,
                processor,
                val_rows,
                early_min=budget.window_early_min,
                follow_min=budget.window_follow_min,
            )
            _run_stage(
                "sft",
                model,
                params,
                budget.sft_steps,
                budget.sft_lr,
                loss_fn=audio_loss,
                check=window.check,
                check_every=budget.sft_check_every,
                **run,
            )
            report.sft_checks += [{"attempt": attempt, **c.to_json()} for c in window.checks]
            report.sft_kept_step = window.restore()
            if report.sft_kept_step is not None:
                break

    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    model.eval()
    return report
