"""Per-token signals of generated completions, re-scored teacher-forced (paper §3.2-3.3).

For prompt + completion (one forward of the policy, one of the text-only reference), aligned on the generated
token (design.md §2: completion token t is predicted by row P-1+t):

* ``mass_max`` / ``mass_mean``: the audio attention mass a_t with max-head / mean-head reduction, averaged over
  the target layers, from :func:`mapo.probe.audio_attention` (the exact numbers the training loss uses);
* ``entropy``: H(π_θ(·|y_<t, x)) and ``text_entropy``: H(π_text-ref(·|y_<t, x_text)), fp32, at ``temperature``,
  from :func:`mapo.modality.completion_logps_and_entropies`; x_text is :func:`mapo.modality.text_only_prompt`;
* ``delta_h`` = text_entropy − entropy (Δh_t of §3.3);
* optionally ``key_attention``: the attention of each completion token to each audio key
  (:func:`mapo.probe.audio_key_attention`), for evidence masking.

Attention is causal, so these are the values the model had while generating (up to left-padding position ids:
:func:`split_rows` re-scores one unpadded row at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mapo.modality import (
    audio_key_mask,
    completion_logps_and_entropies,
    completion_query_mask,
    concat_prompt_completion,
    resolve_modality,
    text_only_prompt,
)
from mapo.probe import audio_attention, audio_key_attention

__all__ = ["TokenSignals", "completion_key_attention", "split_rows", "teacher_forced_signals"]


@dataclass
class TokenSignals:
    """Signals of a batch of completions; every ``[B, C]`` tensor is fp32 and 0 where ``completion_mask`` is 0."""

    completion_ids: torch.Tensor  # long [B, C]
    completion_mask: torch.Tensor  # [B, C]
    mass_max: torch.Tensor
    mass_mean: torch.Tensor
    entropy: torch.Tensor
    text_entropy: torch.Tensor
    delta_h: torch.Tensor
    key_attention: torch.Tensor | None = None  # [B, C, A]
    audio_index: torch.Tensor | None = None  # long [B, A] key positions in the prompt
    audio_valid: torch.Tensor | None = None  # bool [B, A]


def split_rows(inputs: dict[str, torch.Tensor], completion_ids: torch.Tensor, completion_mask: torch.Tensor):
    """Yield ``(row_inputs, ids [1, C_b], mask [1, C_b])`` per row, left padding and trailing padding removed.

    Needs one audio clip per row (the audio feature tensors are sliced by row).
    """
    n = inputs["input_ids"].shape[0]
    for key in ("input_features", "feature_attention_mask"):
        if key in inputs and inputs[key].shape[0] != n:
            raise ValueError(
                f"{key} has {inputs[key].shape[0]} rows for {n} prompts: one audio clip per row needed"
            )
    for b in range(n):
        keep = inputs["attention_mask"][b].bool()
        row = {
            "input_ids": inputs["input_ids"][b][keep][None],
            "attention_mask": inputs["attention_mask"][b][keep][None],
        }
        for key, value in inputs.items():
            if key not in row:
                row[key] = value[b : b + 1]
        c = max(int(completion_mask[b].sum()), 1)
        yield row, completion_ids[b : b + 1, :c], completion_mask[b : b + 1, :c]


@torch.no_grad()
def teacher_forced_signals(
    model: Any,
    prompt_inputs: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    tokenizer: Any = None,
    spec: Any = None,
    target_layers: Sequence[int] | None = None,
    temperature: float = 1.0,
    reference_model: Any = None,
    key_attention: bool = False,
    key_head_reduce: str = "mean",
    text_only_mode: str = "drop",
) -> TokenSignals:
    """Re-score ``completion_ids`` after ``prompt_inputs`` (the processor's outputs for the prompt).

    Args:
        prompt_inputs: ``input_ids``/``attention_mask`` ``[B, P]`` (left-padded) and the audio feature tensors.
        completion_ids, completion_mask: ``[B, C]`` right-padded.
        tokenizer: used to find audio start/end markers that the config does not declare (Qwen2-Audio).
        spec: a :class:`mapo.modality.ModalitySpec` (default: resolved from ``model``).
        target_layers: decoder layers of the mass (default: the last five).
        temperature: entropies are of softmax(logits / temperature), the sampling distribution.
        reference_model: the text-only reference π_text-ref (default: ``model`` itself, i.e. the frozen base when
            diagnosing a base model; pass the base model when diagnosing a fine-tuned one).
        key_attention: also compute the per-audio-key attention map (an extra forward).
        text_only_mode: "drop" (the paper's x_text) or "keep_placeholders" (the public reference's variant); see
            :func:`mapo.modality.text_only_prompt`.
    """
    lay = _layout(model, prompt_inputs, completion_ids, completion_mask, spec, tokenizer)
    spec, audio_kwargs, cat, keys, queries = lay.spec, lay.audio_kwargs, lay.cat, lay.keys, lay.queries
    prompt_ids, prompt_mask = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]
    c = completion_ids.shape[1]
    mask = completion_mask.float()
    with audio_attention(model, keys, queries, target_layers, spec=spec) as cap:
        _, entropy = completion_logps_and_entropies(
            model, cat.input_ids, cat.attention_mask, c, temperature=temperature, **audio_kwargs
        )
    mass_max = cap.reduced("max", "mean")[:, cat.query_rows] * mask
    mass_mean = cap.reduced("mean", "mean")[:, cat.query_rows] * mask

    text_ids, text_mask = text_only_prompt(
        prompt_ids, prompt_mask, spec, _pad_id(model, tokenizer), text_only_mode=text_only_mode
    )
    text_cat = concat_prompt_completion(text_ids, text_mask, completion_ids, completion_mask)
    reference = reference_model if reference_model is not None else model
    _, text_entropy = completion_logps_and_entropies(
        reference, text_cat.input_ids, text_cat.attention_mask, c, temperature=temperature
    )
    entropy, text_entropy = entropy * mask, text_entropy * mask
    signals = TokenSignals(
        completion_ids,
        completion_mask,
        mass_max,
        mass_mean,
        entropy,
        text_entropy,
        (text_entropy - entropy) * mask,
    )
    if key_attention:
        signals.key_attention, signals.audio_index, signals.audio_valid = _key_attention(
            model, lay, completion_mask, target_layers or cap.target_layers, key_head_reduce
        )
    return signals


@torch.no_grad()
def completion_key_attention(
    model: Any,
    prompt_inputs: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    tokenizer: Any = None,
    spec: Any = None,
    target_layers: Sequence[int] | None = None,
    head_reduce: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention of each completion token to each audio key, from one teacher-forced forward (appendix C.4).

    Arguments as in :func:`teacher_forced_signals`. Returns ``(key_attention [B, C, A]`` fp32, 0 on completion
    padding; ``audio_index [B, A]`` key positions in the prompt; ``audio_valid [B, A])``, as in
    :class:`TokenSignals`.
    """
    lay = _layout(model, prompt_inputs, completion_ids, completion_mask, spec, tokenizer)
    return _key_attention(model, lay, completion_mask, target_layers, head_reduce)


@dataclass
class _Layout:
    """Prompt + completion as one teacher-forced forward sees them."""

    spec: Any  # ModalitySpec
    audio_kwargs: dict[str, torch.Tensor]
    cat: Any  # the result of concat_prompt_completion
    keys: torch.Tensor  # bool [B, L] audio keys
    queries: torch.Tensor  # bool [B, L] rows predicting completion tokens


def _layout(
    model: Any,
    prompt_inputs: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    spec: Any,
    tokenizer: Any,
) -> _Layout:
    spec = resolve_modality(spec if spec is not None else model, tokenizer)
    prompt_ids, prompt_mask = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]
    cat = concat_prompt_completion(prompt_ids, prompt_mask, completion_ids, completion_mask)
    return _Layout(
        spec,
        {k: v for k, v in prompt_inputs.items() if k in spec.audio_feature_kwargs},
        cat,
        audio_key_mask(cat.input_ids, spec),
        completion_query_mask(prompt_ids.shape[1], completion_mask),
    )


def _key_attention(
    model: Any,
    lay: _Layout,
    completion_mask: torch.Tensor,
    target_layers: Sequence[int] | None,
    head_reduce: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cat = lay.cat
    with audio_key_attention(
        model, lay.keys, lay.queries, cat.attention_mask, target_layers, head_reduce, spec=lay.spec
    ) as kcap:
        model(
            input_ids=cat.input_ids,
            attention_mask=cat.attention_mask,
            use_cache=False,
            logits_to_keep=1,
            **lay.audio_kwargs,
        )
    attention = kcap.attention[:, cat.query_rows] * completion_mask.float()[..., None]
    return attention, kcap.audio_index, kcap.audio_valid


def _pad_id(model: Any, tokenizer: Any) -> int:
    for source in (tokenizer, getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "pad_token_id", None)
        if isinstance(value, int):
            return value
    raise ValueError("no pad_token_id on the tokenizer, generation config or config; pass tokenizer=")
