"""The binary POS gate g_t^pos of eq. 3–4 (paper §3.5, appendix E), one value per completion token.

g_t = 1 iff token y_t belongs to a word whose coarse tag is in the target set (default: the paper's
{NOUN, VERB, ADJ, ADV, NUM, X}); punctuation, whitespace, special tokens and ids outside the vocabulary get 0.
Words come from :func:`mapo.pos_gate.tokens.segment_words`; all words of a completion are tagged in one call, so
the tagger sees the sentence context (as ``nltk.pos_tag`` over the whole completion in the paper).

There is no fallback: the gate of a degenerate completion is what it is (possibly all zeros), and
:class:`PosGateReport` states the tagger and the fraction of gated-on tokens for every batch, so an "all ones"
gate can only happen when the text really is all content words, and it is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mapo.pos_gate.taggers import Tagger, resolve_tagger
from mapo.pos_gate.tokens import TokenTable, segment_words, token_table

__all__ = [
    "COARSE_TAGS",
    "DEFAULT_TARGET_TAGS",
    "PosGateReport",
    "pos_gate",
    "pos_gate_batch",
    "pos_tags",
]

#: The paper's target set (appendix E).
DEFAULT_TARGET_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ", "ADV", "NUM", "X")
#: Tags a target set may name: NLTK's universal-style set plus Universal Dependencies names for custom taggers.
COARSE_TAGS = frozenset(
    "NOUN VERB ADJ ADV PRON DET ADP CONJ NUM PART PUNCT X PRT PROPN AUX CCONJ SCONJ INTJ SYM".split()
)

TaggerLike = str | Callable[[list[str]], Sequence[str]]


def _targets(target_tags: Iterable[str]) -> frozenset[str]:
    if isinstance(target_tags, str):
        raise TypeError(f"target_tags must be a collection of tags, got the string {target_tags!r}")
    targets = frozenset(target_tags)
    unknown = sorted(targets - COARSE_TAGS)
    if unknown:
        raise ValueError(f"target_tags has unknown tags {unknown}; known coarse tags: {sorted(COARSE_TAGS)}")
    return targets


def _word_tags(words: list[str], tagger: Tagger) -> list[str]:
    tags = tagger(words) if words else []
    if len(tags) != len(words):
        raise ValueError(f"tagger {tagger.name!r} returned {len(tags)} tags for {len(words)} words")
    return list(tags)


def _tokens_and_tags(completion_ids: Any, table: TokenTable, tagger: Tagger):
    seg = segment_words(completion_ids, table)
    return seg, _word_tags(seg.words, tagger)


def _gate_values(seg, tags: list[str], targets: frozenset[str]) -> list[int]:
    on_word = [1 if t in targets else 0 for t in tags]
    gate = [on_word[w] if w >= 0 else 0 for w in seg.token_word]
    for t, more in seg.extra.items():  # a token spanning several words is on if any of them is
        gate[t] = max([gate[t], *(on_word[w] for w in more)])
    return gate


def pos_tags(completion_ids: Any, tokenizer: Any, *, tagger: TaggerLike = "lexicon") -> list[str | None]:
    """Per token, the coarse tag of the word it belongs to (``None``: punctuation, whitespace, special token).

    Useful for diagnostics (POS entropy analysis, appendix E); :func:`pos_gate` is this thresholded.
    """
    seg, tags = _tokens_and_tags(completion_ids, token_table(tokenizer), resolve_tagger(tagger))
    return [tags[w] if w >= 0 else None for w in seg.token_word]


def pos_gate(
    completion_ids: Any,
    tokenizer: Any,
    *,
    tagger: TaggerLike = "lexicon",
    target_tags: Iterable[str] = DEFAULT_TARGET_TAGS,
) -> list[int]:
    """g^pos for one completion: a 0/1 value per token id (``len(result) == len(completion_ids)``).

    Args:
        completion_ids: the completion's token ids (list or 1-D tensor), without padding.
        tokenizer: the policy's tokenizer (byte-level BPE, sentencepiece ``▁``, or other; see ``tokens.py``).
        tagger: ``"lexicon"`` (built in, no data), ``"nltk"`` (the paper's averaged perceptron; raises
            :class:`~mapo.pos_gate.taggers.NltkDataMissingError` with the install command if its data is
            missing), a :class:`~mapo.pos_gate.taggers.NltkTagger`, or any callable ``list[str] -> list[str]``.
        target_tags: coarse tags that open the gate.
    """
    targets = _targets(target_tags)
    seg, tags = _tokens_and_tags(completion_ids, token_table(tokenizer), resolve_tagger(tagger))
    return _gate_values(seg, tags, targets)


@dataclass(frozen=True)
class PosGateReport:
    """What a :func:`pos_gate_batch` call did; log :meth:`as_metrics` so a degenerate gate is visible."""

    tagger: str
    #: How token ids were turned into text: "byte_level", "metaspace" or "decode".
    alignment: str
    n_sequences: int
    #: Completion tokens (padding excluded).
    n_tokens: int
    #: Tokens with gate 1.
    n_on: int
    #: n_on / n_tokens (0.0 for an empty batch).
    on_fraction: float
    n_words: int
    #: Sequences whose gate is all zeros (no target word at all; their L_attn term is 0).
    n_sequences_all_off: int
    #: Ids outside the tokenizer's vocabulary (gated off).
    n_unknown_ids: int

    def as_metrics(self, prefix: str = "pos_gate/") -> dict[str, float]:
        """Scalar metrics for a logger, e.g. ``{"pos_gate/on_fraction": 0.41, ...}`` (the tagger name excluded)."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items() if not isinstance(v, str)}


def pos_gate_batch(
    completion_ids: Sequence[Any],
    tokenizer: Any,
    *,
    tagger: TaggerLike = "lexicon",
    target_tags: Iterable[str] = DEFAULT_TARGET_TAGS,
    pad_to: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, PosGateReport]:
    """g^pos for a batch, right-padded to ``[B, T]`` (T = ``pad_to`` or the longest completion), padding 0.

    ``completion_ids`` is a list of per-completion id lists (TRL's ``completion_ids_list``, no padding). The
    tagger is resolved once for the batch.
    """
    targets = _targets(target_tags)
    tag = resolve_tagger(tagger)
    table = token_table(tokenizer)
    rows = [ids.tolist() if hasattr(ids, "tolist") else list(ids) for ids in completion_ids]
    width = max((len(r) for r in rows), default=0)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest completion ({width} tokens)")
        width = pad_to
    out = torch.zeros(len(rows), width, dtype=dtype)
    n_tokens = n_on = n_words = n_all_off = n_unknown = 0
    for b, ids in enumerate(rows):
        seg, tags = _tokens_and_tags(ids, table, tag)
        gate = _gate_values(seg, tags, targets)
        on = sum(gate)
        if gate:
            out[b, : len(gate)] = torch.tensor(gate, dtype=dtype)
        n_tokens += len(gate)
        n_on += on
        n_words += len(seg.words)
        n_all_off += on == 0
        n_unknown += seg.n_unknown
    report = PosGateReport(
        tagger=tag.name,
        alignment=table.scheme,
        n_sequences=len(rows),
        n_tokens=n_tokens,
        n_on=n_on,
        on_fraction=n_on / n_tokens if n_tokens else 0.0,
        n_words=n_words,
        n_sequences_all_off=n_all_off,
        n_unknown_ids=n_unknown,
    )
    return (out.to(device) if device is not None else out), report
