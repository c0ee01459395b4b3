"""Evaluate a tone-melody model: accuracy, chain faithfulness, audio attention decay and Δh key-token recovery.

For each batch of rows (all share the question, so prompts have one length P):

1. **Greedy decoding** with the model's own ``generate`` (no forced scaffold: after warm-up the model must write
   the whole ``<think>…</think><answer>…</answer>`` template itself, as it will under RL sampling).
2. **Teacher-forced re-scoring** of the generated completion (cut after the first ``<|im_end|>``):
   * audio attention mass a_t (MAPO §3.2): for the query row that predicts completion token t (row P-1+t),
     the attention mass on ``<|AUDIO|>`` keys, max over heads, mean over the target layers (default: the last
     five decoder layers, i.e. all layers of a small model);
   * policy entropy H(π_θ(·|y_<t, x)) and text-only reference entropy H(π(·|y_<t, x_text)) of the *same* model
     with the audio span removed from the prompt (design §4), fp32, temperature 1; Δh_t = H_text − H_policy
     (MAPO §3.3).

Metrics (keys ``"<split>/<name>"``, splits as in the rows' ``split`` field):

* ``answer_acc`` (answer text == row answer), ``format_ok`` (K notes in the chain and an answer that is an option),
  ``note_acc`` (per position), ``early_note_acc`` (notes before the trap tail), ``late_note_acc`` (last
  ``trap_tail`` notes);
* ``late_follow_prior``: share of late notes equal to the model's own previous note + the melody's step, i.e.
  continuations of the text already written (on trap items these are wrong by construction);
* ``attn_note_profile`` (mean a_t at the k-th note token), ``attn_early``/``attn_late`` (mean a_t at note tokens of
  the first / last ``trap_tail`` notes) and ``attn_ratio`` = late / early (the collapse figure; < 1 = decay);
  ``attn_token_ratio``: the same over *all* completion tokens, last third / first third;
* ``dh_precision_at_k``: per sequence, the top-K tokens by |Δh| with K = number of true note tokens (so precision
  = recall), averaged over sequences; ``dh_auroc``: AUROC of |Δh| for note-vs-scaffold over all tokens;
  ``dh_early``/``dh_late``: mean Δh at early / late note tokens.

The signals come from the library itself (``mapo.probe``, ``mapo.modality``), so the figures
here are the ones the MAPO trainer will see.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mapo.modality import (
    ModalitySpec,
    audio_key_mask,
    completion_logps_and_entropies,
    completion_query_mask,
    resolve_modality,
    text_only_prompt,
)
from mapo.probe import audio_attention

from .batching import Encoder, TokenBatch
from .task import NOTE_NAMES, note_token_labels, parse_completion

__all__ = ["completion_signals", "evaluate"]


# ----------------------------------------------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def completion_signals(
    model,
    batch: TokenBatch,
    spec: ModalitySpec,
    pad_token_id: int,
    target_layers: Sequence[int] | None = None,
    text_reference=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, h_policy, h_text)``, each ``[B, T]`` fp32 and 0 on padding, for a prompt ‖ completion batch.

    * a_t: audio attention mass of the query row predicting completion token t (row P-1+t), max over heads,
      mean over ``target_layers`` (default: the last five), from :func:`mapo.probe.audio_attention` (§3.2);
    * h_policy: entropy of π_θ(·|y_<t, x) at temperature 1, from the same forward
      (:func:`mapo.modality.completion_logps_and_entropies`);
    * h_text: entropy of ``text_reference`` (default: the same model; MAPO's π_text-ref is the frozen base)
      given the text-only prompt (:func:`mapo.modality.text_only_prompt`: audio placeholders and their markers
      removed, no features) and the unchanged completion (§3.3, design §4).
    """
    p, width = batch.prompt_len, batch.completion_mask.shape[1]
    mask = batch.completion_mask.float()
    keys = audio_key_mask(batch.input_ids, spec, prompt_width=p)
    queries = completion_query_mask(p, batch.completion_mask)
    audio_kwargs = {
        "input_features": batch.input_features,
        "feature_attention_mask": batch.feature_attention_mask,
    }
    with audio_attention(model, keys, query_mask=queries, target_layers=target_layers, spec=spec) as capture:
        _, h_policy = completion_logps_and_entropies(
            model, batch.input_ids, batch.attention_mask, width, **audio_kwargs
        )
    mass = capture.mass[:, p - 1 : p - 1 + width].float()
    prompt_ids, prompt_mask = batch.input_ids[:, :p], batch.attention_mask[:, :p]
    text_ids, text_mask = text_only_prompt(prompt_ids, prompt_mask, spec, pad_token_id)
    ids = torch.cat([text_ids, batch.completion_ids()], dim=1)
    attn = torch.cat([text_mask, batch.completion_mask.to(text_mask.dtype)], dim=1)
    _, h_text = completion_logps_and_entropies(text_reference or model, ids, attn, width)
    return mass * mask, h_policy.float() * mask, h_text.float() * mask


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based AUROC (ties get average ranks); NaN if one class is absent."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


def _cut_after_eos(seqs: torch.Tensor, eos_id: int) -> list[list[int]]:
    out = []
    for row in seqs.tolist():
        out.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return out


@torch.no_grad()
def _score_batch(
    model,
    enc: Encoder,
    spec: ModalitySpec,
    rows: list[dict],
    max_new_tokens: int,
    target_layers,
    text_reference,
) -> list[dict]:
    prompts = [enc.prompt_ids(r["question"]) for r in rows]
    feats = enc.features([r["audio"] for r in rows])
    gen_in = enc.batch(prompts, [[] for _ in rows], feats)
    seqs = model.generate(
        **gen_in.model_inputs(), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=enc.pad_id
    )
    completions = [c if c else [enc.eos_id] for c in _cut_after_eos(seqs[:, gen_in.prompt_len :], enc.eos_id)]
    batch = enc.batch(prompts, completions, feats)
    mass, h_policy, h_text = completion_signals(model, batch, spec, enc.pad_id, target_layers, text_reference)
    records = []
    for i, (row, comp) in enumerate(zip(rows, completions)):
        n = len(comp)
        text = enc.tokenizer.decode(comp, skip_special_tokens=False)
        notes, answer = parse_completion(text)
        records.append(
            {
                "row": row,
                "completion": text,
                "notes": notes,
                "answer": answer,
                "labels": np.array(note_token_labels(comp, enc.tokenizer)),
                "mass": mass[i, :n].numpy(),
                "dh": (h_text[i, :n] - h_policy[i, :n]).numpy(),
            }
        )
    return records


def _split_metrics(records: list[dict], n_notes: int, tail: int) -> dict[str, Any]:
    scale = {name: i for i, name in enumerate(NOTE_NAMES)}
    m: dict[str, Any] = {"n": len(records)}
    correct = np.zeros((len(records), n_notes))
    follow, answer_ok, format_ok = [], [], []
    note_mass = defaultdict(list)
    dh_by_note = defaultdict(list)
    token_early, token_late, precisions = [], [], []
    all_scores, all_labels = [], []
    for j, rec in enumerate(records):
        row, gen = rec["row"], rec["notes"]
        answer_ok.append(rec["answer"] == row["answer"])
        format_ok.append(len(gen) == n_notes and rec["answer"] in row["choices"])
        for k in range(min(len(gen), n_notes)):
            correct[j, k] = gen[k] == row["notes"][k]
        for k in range(n_notes - tail, min(len(gen), n_notes)):
            follow.append((scale[gen[k]] - scale[gen[k - 1]]) % 5 == row["step"] % 5)
        labels, mass, dh = rec["labels"], rec["mass"], rec["dh"]
        for k, pos in enumerate(np.flatnonzero(labels)[:n_notes]):
            note_mass[k].append(mass[pos])
            dh_by_note[k].append(dh[pos])
        third = max(1, len(mass) // 3)
        token_early.append(mass[:third].mean())
        token_late.append(mass[-third:].mean())
        n_key = int(labels.sum())
        if n_key:
            top = np.argsort(-np.abs(dh), kind="mergesort")[:n_key]
            precisions.append(labels[top].mean())
        all_scores.append(np.abs(dh))
        all_labels.append(labels)
    early_k, late_k = range(tail), range(n_notes - tail, n_notes)
    mean = lambda xs: float(np.mean(xs)) if len(xs) else float("nan")
    m["answer_acc"] = mean(answer_ok)
    m["format_ok"] = mean(format_ok)
    m["note_acc"] = [float(x) for x in correct.mean(0)]
    m["early_note_acc"] = float(correct[:, : n_notes - tail].mean())
    m["late_note_acc"] = float(correct[:, n_notes - tail :].mean())
    m["late_follow_prior"] = mean(follow)
    m["attn_note_profile"] = [mean(note_mass[k]) for k in range(n_notes)]
    m["attn_early"] = mean([x for k in early_k for x in note_mass[k]])
    m["attn_late"] = mean([x for k in late_k for x in note_mass[k]])
    m["attn_ratio"] = m["attn_late"] / m["attn_early"] if m["attn_early"] > 0 else float("nan")
    m["attn_token_ratio"] = mean(token_late) / max(mean(token_early), 1e-12)
    m["dh_precision_at_k"] = mean(precisions)
    m["dh_auroc"] = (
        _auroc(np.concatenate(all_scores), np.concatenate(all_labels)) if records else float("nan")
    )
    m["dh_early"] = mean([x for k in early_k for x in dh_by_note[k]])
    m["dh_late"] = mean([x for k in late_k for x in dh_by_note[k]])
    return m


def evaluate(
    model,
    processor,
    rows: Sequence[dict[str, Any]],
    batch_size: int = 100,
    target_layers: Sequence[int] | None = None,
    n_notes: int | None = None,
    trap_tail: int = 2,
    return_records: bool = False,
    text_reference=None,
) -> dict[str, Any]:
    """Greedy-decode ``rows`` and measure accuracy, faithfulness, audio attention and Δh (see module docstring).

    Args:
        model, processor: from :func:`mapo.synthetic.build_tiny_audio_lm` (after :func:`warm_up`).
        rows: task rows (e.g. ``task.prior + task.trap``); metrics are reported per ``row["split"]``.
        batch_size: rows per generate call.
        target_layers: decoder layers averaged for a_t (default: the last five).
        n_notes, trap_tail: the task's K and tail (default K: the rows' melody length).
        text_reference: the model whose text-only entropies give Δh (default: ``model`` itself; after RL pass the
            frozen base model, MAPO's π_text-ref).

    Returns a flat dict ``{"<split>/<metric>": value, "seconds": ...}``; with
    ``return_records`` also ``"records"`` (per row: completion text, notes, answer, labels, a_t, Δh).
    """
    import time

    if not rows:
        raise ValueError("rows: nothing to evaluate (pass e.g. task.prior + task.trap)")
    start = time.perf_counter()
    n_notes = n_notes or len(rows[0]["notes"])
    enc = Encoder(processor)
    spec = resolve_modality(model, processor.tokenizer)
    was_training = model.training
    model.eval()
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["question"]].append(r)
    records: list[dict] = []
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            records += _score_batch(model, enc, spec, chunk, 2 * n_notes + 8, target_layers, text_reference)
    model.train(was_training)
    out: dict[str, Any] = {}
    by_split: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_split[rec["row"]["split"]].append(rec)
    for split, recs in by_split.items():
        for key, value in _split_metrics(recs, n_notes, trap_tail).items():
            out[f"{split}/{key}"] = value
    out["seconds"] = time.perf_counter() - start
    if return_records:
        out["records"] = records
    return out
