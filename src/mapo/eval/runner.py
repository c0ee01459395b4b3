"""Batched generation on benchmark items with the training prompt, saved as re-scorable predictions.

The prompt is the one the policy was trained with: a conversational user turn with the audio part(s) followed by
:func:`mapo.data.format_question` (question, lettered options, the thinking-template instruction). Items without
options (MMAU-Pro open and instruction-following) get the question and :data:`OPEN_INSTRUCTION`. Decoding is
greedy by default (one deterministic sample per item; the public release samples with the checkpoint's
generation config, which is available with ``do_sample=True``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mapo.data import DEFAULT_INSTRUCTION, AudioPromptTransform, audio_prompt, format_question
from mapo.eval.items import EvalItem, Prediction

__all__ = [
    "OPEN_INSTRUCTION",
    "GenerationSettings",
    "PromptBatch",
    "build_messages",
    "decode_completions",
    "encode_prompts",
    "generate_batch",
    "generate_predictions",
    "load_clips",
    "load_model_and_processor",
    "read_predictions",
    "write_predictions",
]

logger = logging.getLogger(__name__)

OPEN_INSTRUCTION = (
    "Think about the audio step by step inside <think> </think>, then give your final answer inside "
    "<answer> </answer>."
)


@dataclass
class GenerationSettings:
    """Decoding settings of :func:`generate_predictions`."""

    batch_size: int = 4
    max_new_tokens: int = 2048
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    instruction: str | None = DEFAULT_INSTRUCTION
    open_instruction: str | None = OPEN_INSTRUCTION
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")


def build_messages(
    item: EvalItem, clips: Sequence[np.ndarray], settings: GenerationSettings
) -> list[dict[str, Any]]:
    """The conversational prompt of ``item`` (same builder as training for single-clip items)."""
    if item.choices:
        text = format_question(item.question, item.choices, settings.instruction)
    else:
        text = f"{item.question}\n{settings.open_instruction}" if settings.open_instruction else item.question
    if len(clips) == 1:
        return audio_prompt(clips[0], text, settings.system_prompt)
    # Several clips (a few MMAU-Pro items): one audio part per clip, in order, before the text.
    messages = audio_prompt(clips[0], text, settings.system_prompt)
    user = messages[-1]
    user["content"] = [{"type": "audio", "audio": c} for c in clips] + [user["content"][-1]]
    return messages


def _token_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, (list, tuple)):
        return {int(v) for v in value if v is not None}
    return {int(value)}


def _audio_special_ids(config: Any) -> list[int]:
    """Audio placeholder/marker ids of the model: never to be generated (they would break re-scoring forwards)."""
    ids: set[int] = set()
    for name in ("audio_token_index", "audio_token_id", "audio_start_token_id", "audio_end_token_id"):
        ids |= _token_ids(getattr(config, name, None))
    return sorted(ids)


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    gen = getattr(model, "generation_config", None)
    return (
        _token_ids(getattr(gen, "eos_token_id", None))
        | _token_ids(tokenizer.eos_token_id)
        | _token_ids(tokenizer.pad_token_id)
    )


def _decode(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor, stop: set[int]) -> str:
    """Text of one completion without its stop token. Special tokens are kept: ``<think>``/``<answer>`` may be
    special tokens, and the extraction rules need them."""
    row = [t for t, m in zip(ids.tolist(), mask.tolist()) if m and t not in stop]
    return tokenizer.decode(row, skip_special_tokens=False)


def decode_completions(
    model: Any, processor: Any, completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> list[str]:
    """Texts of a batch of completions from :func:`generate_batch` (stop tokens removed, special tokens kept)."""
    stop = _stop_ids(model, processor.tokenizer)
    return [
        _decode(processor.tokenizer, ids, mask, stop) for ids, mask in zip(completion_ids, completion_mask)
    ]


@dataclass
class PromptBatch:
    """Encoded prompts of a batch of items: the processor outputs (left-padded ``input_ids [B, P]``,
    ``attention_mask``, audio features) on the model's device, and the waveforms they were built from."""

    items: list[EvalItem]
    clips: list[list[np.ndarray]]
    inputs: dict[str, torch.Tensor]


def load_clips(processor: Any, item: EvalItem) -> list[np.ndarray]:
    """The item's waveforms, resampled to the feature extractor's rate."""
    loader = AudioPromptTransform(sampling_rate=int(processor.feature_extractor.sampling_rate))
    return [loader.load(a, f"item {item.id}") for a in item.audio]


def encode_prompts(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    settings: GenerationSettings,
    clips: Sequence[Sequence[np.ndarray]] | None = None,
) -> PromptBatch:
    """Build and encode the prompts of ``items`` (``clips`` overrides the audio read from the items' paths)."""
    items = list(items)
    clips = [list(c) for c in clips] if clips is not None else [load_clips(processor, it) for it in items]
    texts = [
        processor.apply_chat_template(
            build_messages(it, c, settings), add_generation_prompt=True, tokenize=False
        )
        for it, c in zip(items, clips)
    ]
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = processor(
            text=texts,
            audio=[a for c in clips for a in c],
            sampling_rate=int(processor.feature_extractor.sampling_rate),
            return_tensors="pt",
            padding=True,
        )
    finally:
        tokenizer.padding_side = side
    param = next(model.parameters())
    inputs = {
        k: (v.to(param.device, param.dtype) if torch.is_floating_point(v) else v.to(param.device))
        for k, v in inputs.items()
    }
    return PromptBatch(items, clips, inputs)


@torch.no_grad()
def generate_batch(
    model: Any, processor: Any, batch: PromptBatch, settings: GenerationSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate for an encoded batch. Returns right-padded ``completion_ids [B, C]`` and the 0/1
    ``completion_mask [B, C]`` (generated tokens up to and including the first stop token)."""
    tokenizer = processor.tokenizer
    stop = _stop_ids(model, tokenizer)
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    suppress = _audio_special_ids(model.config)
    if suppress:
        kwargs["suppress_tokens"] = suppress
    generated = model.generate(**batch.inputs, **kwargs)
    completion = generated[:, batch.inputs["input_ids"].shape[1] :]
    is_stop = torch.zeros_like(completion, dtype=torch.bool)
    for t in stop:
        is_stop |= completion == t
    # Keep tokens up to and including the first stop token.
    before = (is_stop.long().cumsum(dim=1) - is_stop.long()) == 0
    mask = before.long()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return completion.masked_fill(mask == 0, pad), mask


def generate_predictions(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    settings: GenerationSettings | None = None,
    *,
    progress: bool = True,
) -> list[Prediction]:
    """Generate one completion per item (batched, left-padded) and return unscored :class:`Prediction` s.

    ``processor`` is the model's processor (tokenizer + feature extractor; ``processor(text=, audio=,
    sampling_rate=)``). Audio is read from the items' paths and resampled to the feature extractor's rate.
    """
    from tqdm.auto import tqdm

    settings = settings or GenerationSettings()
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    out: list[Prediction] = []
    bar = tqdm(total=len(items), desc="generating", unit="item", disable=not progress)
    try:
        for start in range(0, len(items), settings.batch_size):
            batch = encode_prompts(model, processor, items[start : start + settings.batch_size], settings)
            ids, mask = generate_batch(model, processor, batch, settings)
            for it, text in zip(batch.items, decode_completions(model, processor, ids, mask)):
                out.append(Prediction.from_item(it, text))
            bar.update(len(batch.items))
    finally:
        bar.close()
        model.train(was_training)
    return out


def write_predictions(predictions: Iterable[Prediction], path: str) -> None:
    """One JSON object per line (``Prediction.to_json``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for pred in predictions:
            fh.write(json.dumps(pred.to_json(), ensure_ascii=False) + "\n")


def read_predictions(path: str) -> list[Prediction]:
    """Read a predictions JSONL file written by :func:`write_predictions`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    preds = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
                preds.append(Prediction.from_json(row, f"{path}:{lineno}"))
    if not preds:
        raise ValueError(f"{path}: no predictions")
    return preds


def load_model_and_processor(
    model_path: str,
    adapter: str | None = None,
    processor_path: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
):
    """Load a base model (the thinker for Omni checkpoints) and optionally a LoRA adapter (merged), plus its
    processor. ``model_path`` may itself be an adapter folder (its ``base_model_name_or_path`` is loaded)."""
    from transformers import AutoProcessor

    from mapo.modality import load_policy_model

    if adapter is None and os.path.exists(os.path.join(model_path, "adapter_config.json")):
        adapter = model_path
        with open(os.path.join(model_path, "adapter_config.json"), encoding="utf-8") as fh:
            model_path = json.load(fh).get("base_model_name_or_path") or ""
        if not model_path:
            raise ValueError(
                f"{adapter}/adapter_config.json has no base_model_name_or_path; pass --model BASE"
            )
    model = load_policy_model(model_path, dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if processor_path is None:
        has_proc = adapter is not None and any(
            os.path.exists(os.path.join(adapter, f))
            for f in ("preprocessor_config.json", "processor_config.json")
        )
        processor_path = adapter if has_proc else model_path
    processor = AutoProcessor.from_pretrained(processor_path)
    if device is not None:
        model = model.to(device)
    return model.eval(), processor
