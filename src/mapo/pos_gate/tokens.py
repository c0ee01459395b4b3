"""Merge sub-word tokens into words (appendix E: "generated subword tokens are decoded, normalized, and merged
into word units"), with a per-tokenizer cache of what each token id looks like.

Each token id is decoded once into a :class:`TokenInfo`: its text split into *runs* of whitespace, word
characters (letters, digits, combining marks) and single punctuation characters. A whole completion is then
segmented in one left-to-right pass over the cached runs:

* whitespace (including byte-level ``Ġ`` space and ``Ċ`` newline, and sentencepiece ``▁``) ends a word;
* special tokens (``<|im_end|>``, ``<think>``, any added token written like ``<...>``) and ids outside the
  vocabulary end a word and belong to none;
* punctuation ends a word, except ``' ’ - ‐`` between word characters (``don't``, ``speaker’s``,
  ``horse-drawn``) and ``. , :`` between digits (``0.5``, ``1,000``, ``3:45``), which stay inside it;
* bytes of a multi-byte UTF-8 character split over several byte-level tokens are joined before decoding.

A token belongs to the word(s) its word characters are part of; a token without word characters (pure
punctuation, whitespace, special) belongs to no word and gets gate 0.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["TokenInfo", "TokenTable", "WordSegmentation", "segment_words", "token_table"]

SPACE, WORD, PUNCT = 0, 1, 2
_JOIN_ANY = frozenset("'’-‐")
_JOIN_DIGITS = frozenset(".,:")
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_TAG_LIKE = re.compile(r"^<[^<>\s]+>$")
_MAX_PARTIAL_TOKENS = 8


@dataclass(frozen=True)
class TokenInfo:
    """What one token id contributes to the text (cached per tokenizer)."""

    text: str
    #: Special/added marker token or unknown id: a word boundary that belongs to no word.
    special: bool
    #: (kind, text) runs: kind SPACE (0), WORD (1) or PUNCT (2, one character per run).
    runs: tuple[tuple[int, str], ...]
    #: Raw bytes when the token is an incomplete piece of a multi-byte UTF-8 character, else None.
    partial: bytes | None = None
    #: The id is outside the tokenizer's vocabulary (e.g. a model's padded embedding rows); also ``special``.
    unknown: bool = False


def _char_kind(c: str) -> int:
    if c.isspace():
        return SPACE
    if c.isalnum() or unicodedata.category(c)[0] == "M":
        return WORD
    return PUNCT


def text_runs(text: str) -> tuple[tuple[int, str], ...]:
    """Split text into whitespace runs, word-character runs and single punctuation characters."""
    runs: list[tuple[int, str]] = []
    for c in text:
        kind = _char_kind(c)
        if kind != PUNCT and runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + c)
        else:
            runs.append((kind, c))
    return tuple(runs)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` (printable stand-ins such as ``Ġ`` for each byte)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _scheme(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "id_to_token") and hasattr(tokenizer, "pre_tokenizer"):
        backend = tokenizer  # a raw `tokenizers.Tokenizer`
    if backend is not None:
        desc = f"{backend.pre_tokenizer!r} {backend.decoder!r}"
        if "ByteLevel" in desc:
            return "byte_level"
        if "Metaspace" in desc or "▁" in desc:
            return "metaspace"
        return "decode"
    if hasattr(tokenizer, "byte_decoder"):  # slow GPT-2 style tokenizers
        return "byte_level"
    if hasattr(tokenizer, "sp_model"):
        return "metaspace"
    return "decode"


class TokenTable:
    """Per-tokenizer cache id → :class:`TokenInfo` (bounded by the vocabulary size).

    ``scheme`` is how token strings become text: ``"byte_level"`` (GPT-2/Qwen byte-to-unicode map, ``Ġ``/``Ċ``),
    ``"metaspace"`` (sentencepiece ``▁`` and ``<0xNN>`` byte-fallback tokens) or ``"decode"`` (fallback:
    ``tokenizer.decode([id])`` per id, for other tokenizers; word starts are then only seen if the decoded piece
    starts with whitespace).
    """

    def __init__(self, tokenizer: Any):
        self.scheme = _scheme(tokenizer)
        self._tokenizer_ref = weakref.ref(tokenizer) if _weakrefable(tokenizer) else (lambda t=tokenizer: t)
        self._cache: dict[int, TokenInfo] = {}
        self._special_ids = _special_ids(tokenizer)
        self._raw_api = not hasattr(tokenizer, "convert_ids_to_tokens")

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids treated as special (gate 0, word boundary): special tokens and tag-like added tokens."""
        return self._special_ids

    def info(self, token_id: int) -> TokenInfo:
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._cache[token_id] = self._build(token_id)
        return cached

    def _build(self, token_id: int) -> TokenInfo:
        tok = self._tokenizer_ref()
        if tok is None:
            raise RuntimeError("the tokenizer of this TokenTable was garbage-collected")
        if token_id in self._special_ids:
            return TokenInfo("", True, ())
        piece = None
        if token_id >= 0:
            piece = tok.id_to_token(token_id) if self._raw_api else tok.convert_ids_to_tokens(token_id)
        if piece is None:
            return TokenInfo("", True, (), unknown=True)
        if self.scheme == "byte_level":
            decoder = _byte_decoder()
            raw = bytes(decoder[c] for c in piece) if all(c in decoder for c in piece) else piece.encode()
        elif self.scheme == "metaspace":
            m = _BYTE_TOKEN.match(piece)
            raw = bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode()
        else:
            raw = tok.decode([token_id], skip_special_tokens=False).encode()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return TokenInfo(raw.decode("utf-8", "replace"), False, (), partial=raw)
        return TokenInfo(text, False, text_runs(text))


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of special tokens plus added tokens that look like markup (``<think>`` is not "special" in Qwen3)."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    if hasattr(tokenizer, "added_tokens_decoder"):
        added = tokenizer.added_tokens_decoder
    elif hasattr(tokenizer, "get_added_tokens_decoder"):
        added = tokenizer.get_added_tokens_decoder()
    else:
        added = {}
    for idx, token in added.items():
        content = getattr(token, "content", str(token))
        if getattr(token, "special", False) or _TAG_LIKE.match(content):
            ids.add(int(idx))
    return frozenset(ids)


_TABLES: weakref.WeakKeyDictionary[Any, TokenTable] = weakref.WeakKeyDictionary()
_TABLES_BY_ID: dict[int, TokenTable] = {}


def token_table(tokenizer: Any) -> TokenTable:
    """The cached :class:`TokenTable` of ``tokenizer`` (one per tokenizer object, freed with it)."""
    try:
        table = _TABLES.get(tokenizer)
        if table is None:
            table = _TABLES[tokenizer] = TokenTable(tokenizer)
        return table
    except TypeError:  # neither hashable nor weak-referenceable: key on identity
        table = _TABLES_BY_ID.get(id(tokenizer))
        if table is None:
            table = _TABLES_BY_ID[id(tokenizer)] = TokenTable(tokenizer)
        return table


@dataclass
class WordSegmentation:
    """Words of one completion and, per token, the index of its word (-1: none).

    ``extra`` lists additional words of the rare tokens whose word characters span several words.
    """

    words: list[str]
    token_word: list[int]
    extra: dict[int, list[int]]
    n_unknown: int = 0


def segment_words(completion_ids: Any, tokenizer_or_table: Any) -> WordSegmentation:
    """Merge the tokens of one completion into words (rules in the module docstring)."""
    table = (
        tokenizer_or_table if isinstance(tokenizer_or_table, TokenTable) else token_table(tokenizer_or_table)
    )
    ids = completion_ids.tolist() if hasattr(completion_ids, "tolist") else list(completion_ids)
    n = len(ids)
    words: list[str] = []
    token_word = [-1] * n
    extra: dict[int, list[int]] = {}
    parts: list[str] = []
    members: list[int] = []
    pending: str | None = None
    n_unknown = 0

    def flush() -> None:
        nonlocal pending
        pending = None
        if not parts:
            return
        w = len(words)
        words.append("".join(parts))
        for t in members:
            if token_word[t] == -1:
                token_word[t] = w
            elif token_word[t] != w:
                extra.setdefault(t, []).append(w)
        parts.clear()
        members.clear()

    def feed(runs: tuple[tuple[int, str], ...], owners: list[int]) -> None:
        nonlocal pending
        for kind, s in runs:
            if kind == WORD:
                if pending is not None:
                    if pending in _JOIN_ANY or (s[0].isdigit() and parts[-1][-1].isdigit()):
                        parts.append(pending)
                        pending = None
                    else:
                        flush()
                parts.append(s)
                for t in owners:
                    if not members or members[-1] != t:
                        members.append(t)
            elif kind == SPACE:
                flush()
            elif (
                pending is None
                and parts
                and (s in _JOIN_ANY or (s in _JOIN_DIGITS and parts[-1][-1].isdigit()))
            ):
                pending = s
            else:
                flush()

    buffer = b""
    buffer_owners: list[int] = []
    for i, tid in enumerate(ids):
        info = table.info(int(tid))
        if info.special:
            if buffer:
                feed(text_runs(buffer.decode("utf-8", "replace")), buffer_owners)
                buffer, buffer_owners = b"", []
            n_unknown += info.unknown
            flush()
            continue
        if info.partial is None and not buffer:
            if info.runs:
                feed(info.runs, [i])
            continue
        # Multi-byte character split across tokens: collect bytes until they decode.
        buffer += info.partial if info.partial is not None else info.text.encode()
        buffer_owners.append(i)
        try:
            text = buffer.decode("utf-8")
        except UnicodeDecodeError:
            if len(buffer_owners) < _MAX_PARTIAL_TOKENS:
                continue
            text = buffer.decode("utf-8", "replace")
        feed(text_runs(text), buffer_owners)
        buffer, buffer_owners = b"", []
    if buffer:
        feed(text_runs(buffer.decode("utf-8", "replace")), buffer_owners)
    flush()
    return WordSegmentation(words, token_word, extra, n_unknown)
