"""Tensor batches of task rows for supervised warm-up and evaluation (prompt + completion, audio features).

Prompts are encoded once per distinct question with the real processor (chat template + placeholder expansion)
and features come from the processor's own ``WhisperFeatureExtractor`` with the processor's padding, so a batch
built here equals ``processor.apply_chat_template(prompt_of(row), tokenize=True, ...)`` token for token
(``tests/synthetic/test_synthetic.py`` checks it). The text-only prompt drops the ``<|audio_bos|> <|AUDIO|>… <|audio_eos|>``
run from the ids with :func:`mapo.modality.text_only_prompt`, exactly what the MAPO text-only reference sees
(``docs/design.md`` §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mapo.modality import ModalitySpec, text_only_prompt

from .task import prompt_of

__all__ = ["Encoder", "TokenBatch", "completion_logits", "completion_nll"]


@dataclass
class TokenBatch:
    """A right-padded ``prompt ‖ completion`` batch.

    ``input_ids``/``attention_mask``: ``[B, P + T]``; ``completion_mask``: ``[B, T]`` (1 on real completion
    tokens); ``prompt_len`` = P (every prompt in a batch has the same length); audio tensors or ``None``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    prompt_len: int
    input_features: torch.Tensor | None = None
    feature_attention_mask: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.input_features is not None:
            out["input_features"] = self.input_features
            out["feature_attention_mask"] = self.feature_attention_mask
        return out

    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]


class Encoder:
    """Encodes rows for one processor: cached prompt ids (with and without audio), features, completions."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        tok = self.tokenizer
        self.audio_token_id = tok.convert_tokens_to_ids(processor.audio_token)
        self.spec = ModalitySpec.generic(
            self.audio_token_id,
            start=tok.convert_tokens_to_ids(processor.audio_bos_token),
            end=tok.convert_tokens_to_ids(processor.audio_eos_token),
            family="qwen2_audio",
        )
        self.pad_id = tok.pad_token_id
        self.eos_id = tok.eos_token_id
        self._prompt_cache: dict[str, list[int]] = {}

    # -- prompts ----------------------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """Prompt ids for ``question`` with ``<|AUDIO|>`` expanded (cached; the clip length is fixed, so the
        placeholder count is the same for every clip)."""
        if question not in self._prompt_cache:
            fe = self.processor.feature_extractor
            row = {"audio": np.zeros(fe.n_samples, dtype=np.float32), "question": question}
            enc = self.processor.apply_chat_template(
                [prompt_of(row)], add_generation_prompt=True, tokenize=True, return_dict=True
            )
            self._prompt_cache[question] = [int(i) for i in enc["input_ids"][0]]
        return self._prompt_cache[question]

    def text_only_ids(self, ids: Sequence[int]) -> list[int]:
        """Drop the audio placeholder run and its bos/eos markers (the text-only reference prompt, ``docs/design.md`` §4)."""
        row = torch.tensor([list(ids)])
        out, _ = text_only_prompt(row, torch.ones_like(row), self.spec, self.pad_id)
        return out[0].tolist()

    # -- audio ------------------------------------------------------------------------------------------------
    def features(self, clips: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_features [N, 128, frames]`` and ``feature_attention_mask [N, frames]`` as the processor makes them."""
        fe = self.processor.feature_extractor
        out = fe(
            [np.asarray(c, dtype=np.float32) for c in clips],
            sampling_rate=fe.sampling_rate,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
        )
        return out["input_features"], out["attention_mask"]

    # -- completions ------------------------------------------------------------------------------------------
    def completion_ids(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(x) + ([self.eos_id] if add_eos else []) for x in ids]

    def batch(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        features: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TokenBatch:
        """Concatenate equal-length prompts with right-padded completions."""
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("prompts: all prompts of a batch must have the same length (same question)")
        width = max(len(c) for c in completions)
        rows, masks = [], []
        for p, c in zip(prompts, completions, strict=True):
            pad = width - len(c)
            rows.append(list(p) + list(c) + [self.pad_id] * pad)
            masks.append([1] * len(c) + [0] * pad)
        completion_mask = torch.tensor(masks, dtype=torch.long)
        input_ids = torch.tensor(rows, dtype=torch.long)
        attention_mask = torch.cat(
            [torch.ones(len(rows), len(prompts[0]), dtype=torch.long), completion_mask], 1
        )
        feats, fmask = features if features is not None else (None, None)
        return TokenBatch(input_ids, attention_mask, completion_mask, len(prompts[0]), feats, fmask)


def completion_logits(logits: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """``[B, T, V]`` logits of the positions that predict completion tokens (row P-1+t predicts token t)."""
    width = batch.completion_mask.shape[1]
    return logits[:, batch.prompt_len - 1 : batch.prompt_len - 1 + width]


def completion_nll(logits: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """Mean negative log-likelihood over real completion tokens (a scalar)."""
    lg = completion_logits(logits, batch)
    nll = torch.nn.functional.cross_entropy(lg.transpose(1, 2), batch.completion_ids(), reduction="none")
    mask = batch.completion_mask.to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp(min=1)
