"""Where the audio and the completion sit in a model input, from a family's :class:`~mapo.modality.ModalitySpec`.

* the audio key set S_audio of §3.2 (the placeholder run, optionally with its start/end markers) ->
  :func:`audio_key_mask`;
* the text-only prompt x_text of the reference model in Δh_t (§3.3): the prompt with the audio placeholder run and
  its markers removed, re-padded on the left -> :func:`text_only_prompt`;
* prompt + completion as one input, and the query row that predicts each completion token ->
  :func:`concat_prompt_completion`, :func:`completion_query_mask`.

Shapes: ``B`` batch, ``P`` prompt width (left-padded), ``C`` completion width (right-padded), ``L = P + C``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .spec import ModalitySpec

logger = logging.getLogger(__name__)

__all__ = [
    "TEXT_ONLY_MODES",
    "Concatenated",
    "audio_key_mask",
    "completion_query_mask",
    "concat_prompt_completion",
    "text_only_prompt",
]

#: How the text-only prompt x_text is made (:func:`text_only_prompt`): ``"drop"`` the audio placeholders and
#: markers (the paper), or ``"keep_placeholders"`` and drop only the features (the public code).
TEXT_ONLY_MODES: tuple[str, ...] = ("drop", "keep_placeholders")


def _check_ids(name: str, ids: torch.Tensor) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D [B, L] tensor of token ids, got {getattr(ids, 'shape', type(ids))}"
        )


def _placeholder_and_markers(ids: torch.Tensor, spec: ModalitySpec, valid: torch.Tensor | None = None):
    """(placeholder mask, marker mask) [B, L]: markers count only right before / after a placeholder run."""
    audio = ids == spec.audio_token_id
    if valid is not None:
        audio &= valid
    markers = torch.zeros_like(audio)
    if spec.audio_start_token_id is not None:
        nxt = torch.zeros_like(audio)
        nxt[:, :-1] = audio[:, 1:]
        markers |= (ids == spec.audio_start_token_id) & nxt
    if spec.audio_end_token_id is not None:
        prv = torch.zeros_like(audio)
        prv[:, 1:] = audio[:, :-1]
        markers |= (ids == spec.audio_end_token_id) & prv
    if valid is not None:
        markers &= valid
    return audio, markers


def _rows_without_audio(audio: torch.Tensor) -> list[int]:
    return (~audio.any(dim=1)).nonzero().flatten().tolist()


def audio_key_mask(
    input_ids: torch.Tensor,
    spec: ModalitySpec,
    include_markers: bool = False,
    allow_empty_rows: bool = False,
    prompt_width: int | None = None,
) -> torch.Tensor:
    """S_audio of §3.2 as a bool mask ``[B, L]``: positions holding the audio placeholder (and, with
    ``include_markers``, the start/end markers adjacent to a placeholder run).

    ``prompt_width`` (P) limits the audio keys to the prompt columns, so a placeholder id that a policy happened to
    generate in the completion (a text embedding, not audio) never counts. A row without any placeholder raises
    ``ValueError`` naming the row (its audio mass would be a silent 0) unless ``allow_empty_rows``.
    """
    _check_ids("input_ids", input_ids)
    valid = None
    if prompt_width is not None:
        valid = torch.zeros_like(input_ids, dtype=torch.bool)
        valid[:, :prompt_width] = True
    audio, markers = _placeholder_and_markers(input_ids, spec, valid)
    if not allow_empty_rows and (rows := _rows_without_audio(audio)):
        raise ValueError(
            f"input_ids rows {rows} contain no audio placeholder (id {spec.audio_token_id}, family {spec.family}): "
            "their audio attention mass would be identically 0. Check the prompt/processor, or pass "
            "allow_empty_rows=True and exclude those rows from the probe's query_mask."
        )
    return audio | markers if include_markers else audio


def text_only_prompt(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    spec: ModalitySpec,
    pad_token_id: int,
    text_only_mode: str = "drop",
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_text of §3.3: the prompt with the audio removed, left-padded, ready to be followed by the unchanged
    completion (so completion index t is the same token for the policy and the text-only reference).

    Args:
        prompt_ids, prompt_mask: ``[B, P]`` left-padded prompt ids and 0/1 mask.
        spec: the family's :class:`ModalitySpec`.
        pad_token_id: id written into the new padding.
        text_only_mode: ``"drop"`` removes every placeholder run and the start/end markers adjacent to it, then re-pads on
            the left to the new widest row (width ``P' <= P``); ``"keep_placeholders"`` returns the inputs
            unchanged (the caller drops only the audio features, as the public reference does).

    Returns:
        ``(ids [B, P'], mask [B, P'])`` with ``mask``'s dtype.

    Raises:
        ValueError: a row without any audio placeholder (named), a bad ``mode`` or mismatched shapes.
    """
    _check_ids("prompt_ids", prompt_ids)
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask {tuple(prompt_mask.shape)} must have prompt_ids' shape {tuple(prompt_ids.shape)}"
        )
    if text_only_mode not in TEXT_ONLY_MODES:
        raise ValueError(f"text_only_mode must be one of {TEXT_ONLY_MODES}, got {text_only_mode!r}")
    valid = prompt_mask.bool()
    audio, markers = _placeholder_and_markers(prompt_ids, spec, valid)
    if rows := _rows_without_audio(audio):
        raise ValueError(
            f"prompt rows {rows} contain no audio placeholder (id {spec.audio_token_id}, family {spec.family}); "
            "a text-only reference of a prompt without audio is the prompt itself, so its Δh would be a silent 0. "
            "Check that the processor expanded the audio, or filter those rows out."
        )
    if text_only_mode == "keep_placeholders":
        return prompt_ids, prompt_mask
    if spec.marker_names is not None and len(spec.marker_ids) < 2:
        logger.warning(
            "text_only_prompt: the %s markers %s are not all known (start=%s, end=%s), so only the placeholder run "
            "is removed. Pass tokenizer= to resolve_modality to drop the markers too.",
            spec.family,
            spec.marker_names,
            spec.audio_start_token_id,
            spec.audio_end_token_id,
        )
    keep = valid & ~audio & ~markers
    lengths = keep.sum(dim=1)
    width = int(lengths.max())
    batch = prompt_ids.size(0)
    # Left padding: the k-th kept token of row b goes to column width - len_b + k.
    target = (width - lengths).unsqueeze(1) + keep.long().cumsum(dim=1) - 1
    rows = torch.arange(batch, device=prompt_ids.device).unsqueeze(1).expand_as(keep)
    ids = torch.full((batch, width), pad_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    mask = torch.zeros((batch, width), dtype=prompt_mask.dtype, device=prompt_mask.device)
    ids[rows[keep], target[keep]] = prompt_ids[keep]
    mask[rows[keep], target[keep]] = 1
    return ids, mask


class Concatenated(NamedTuple):
    """Prompt + completion as one model input, and where the completion's query rows are."""

    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    query_rows: slice  # rows P-1 .. P+C-2: row P-1+t predicts completion token t
    logits_to_keep: int  # C


def concat_prompt_completion(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> Concatenated:
    """Concatenate a left-padded prompt ``[B, P]`` and a right-padded completion ``[B, C]``.

    ``query_rows`` selects, along the sequence, the query row that predicts each completion token (``docs/design.md`` §2):
    ``x[:, query_rows][:, t]`` belongs to completion token ``t``.
    """
    if prompt_ids.size(0) != completion_ids.size(0):
        raise ValueError(f"prompt batch {prompt_ids.size(0)} != completion batch {completion_ids.size(0)}")
    if prompt_ids.size(1) < 1:
        raise ValueError(
            "prompt_ids must have at least one column: the first completion token needs a query row"
        )
    p, c = prompt_ids.size(1), completion_ids.size(1)
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask.to(completion_mask.dtype), completion_mask], dim=1)
    return Concatenated(ids, mask, slice(p - 1, p - 1 + c), c)


def completion_query_mask(prompt_width: int, completion_mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, P + C]`` with ``completion_mask[:, t]`` at row ``P-1+t``: the probe's ``query_mask``."""
    b, c = completion_mask.shape
    out = torch.zeros((b, prompt_width + c), dtype=torch.bool, device=completion_mask.device)
    out[:, prompt_width - 1 : prompt_width - 1 + c] = completion_mask.bool()
    return out
