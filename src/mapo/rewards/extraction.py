"""Answer extraction and option matching shared by the accuracy, format and consistency rewards.

The rules are deliberately strict (the paper's r_acc is "strict ground-truth accuracy", §4) and are documented
in full in ``docs/rewards.md``; the reference release's lenient prefix matching ("a" matches "an airplane") and
raw-text fallbacks are not reproduced.

Vocabulary used below:

* *answer region*: the text after the last ``</think>``; the whole completion if it has no think tags at all;
  nothing if a ``<think>`` is opened but never closed (the reasoning was cut off).
* *answer*: the contents of the single ``<answer>…</answer>`` pair of the answer region, else the whole region
  (stray ``<answer>``/``</answer>`` tags removed).
* *text key*: NFKC, case-folded, every Unicode punctuation character (and the backtick) replaced by a space,
  whitespace collapsed. Two texts are "the same option" iff their keys are equal.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Extraction",
    "OptionMatch",
    "answer_letter",
    "completion_text",
    "extract_answer",
    "extract_think",
    "match_option",
    "normalize_answer",
    "resolve_gold",
    "text_key",
]

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_PAIR = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ANSWER_TAG = re.compile(r"</?answer>", re.IGNORECASE)

# A leading label such as "Answer:", "**Answer:**", "The final answer is", "So, the correct option is". The
# separator ("is", ":", "-", "=") is required, so "Option B" stays a letter form and is parsed below.
_LABEL = re.compile(
    r"^[*_]*\s*(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+|my\s+)?(?:final\s+|correct\s+|best\s+)?"
    r"(?:answer|choice|option)\s*[*_]*\s*(?:is\s*:?|:|-|=)\s*[*_]*\s*",
    re.IGNORECASE,
)
# "B", "(B)", "[b]", "B)", "Option B", "choice (b)", "Answer B". Trailing ".,;:!?" was stripped by _clean.
_LETTER_ONLY = re.compile(r"^(?:(?:option|choice|answer)\s*)?[(\[]?([a-z])[)\]]?$", re.IGNORECASE)
# A letter with an explicit marker followed by text: "B. piano", "(B) piano", "B) piano", "B: piano",
# "Option B: piano", "Option B piano", "B - piano". A bare "a piano" is NOT a letter form (article "a").
_LETTER_TEXT = re.compile(
    r"^(?:(?:option|choice)\s*[(\[]?([a-z])\b[)\]]?\s*[.:)\-–]?"
    r"|[(\[]([a-z])[)\]]\s*[.:\-–]?"
    r"|([a-z])\s*[.:)]"
    r"|([a-z])\s+[-–])"
    r"\s*(.+)$",
    re.IGNORECASE | re.DOTALL,
)
_WRAPPERS = ("**", "__", "*", "_", "`", '"', "'", "“", "”", "‘", "’")
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`", "*": "*", "_": "_"}
_TRAILING = ".,;:!?。"
_LETTERS = string.ascii_lowercase


def completion_text(completion: Any) -> str:
    """The generated text of one completion, as TRL passes it to reward functions.

    Accepts a string (standard format) or TRL's conversational format: a list of messages
    ``[{"role": "assistant", "content": ...}]`` whose content is a string or a list of parts
    ``[{"type": "text", "text": ...}]``. The text of all assistant messages (messages without a role count as
    assistant) is concatenated; tool or user messages are ignored.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts: list[str] = []
        for message in completion:
            if not isinstance(message, dict):
                raise TypeError(
                    f"completions: expected a string or a list of message dicts, got a list holding "
                    f"{type(message).__name__}"
                )
            if message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content")
            if content is None:
                continue
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(
                    p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
        return "".join(parts)
    raise TypeError(
        f"completions: expected a string or a list of messages per completion, got {type(completion).__name__}"
    )


@dataclass(frozen=True)
class Extraction:
    """Result of :func:`extract_answer`: the raw answer text (``None`` when there is none) and why."""

    answer: str | None
    #: "tag" (one <answer> pair), "tail" (text after </think>), "whole" (no think tags), or "none".
    source: str
    #: Why ``answer`` is None ("" otherwise).
    reason: str = ""


def extract_answer(text: str) -> Extraction:
    """Find the model's final answer in a completion (rules in the module docstring and ``docs/rewards.md``).

    * Two or more ``<answer>…</answer>`` pairs in the answer region → no answer (the model did not commit).
    * An empty ``<answer></answer>`` → no answer (the tail is *not* consulted).
    * An ``<answer>`` tag inside the thinking block is ignored whenever ``</think>`` is present.
    """
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        region, source = text[closes[-1].end() :], "tail"
    elif _THINK_OPEN.search(text):
        return Extraction(None, "none", "reasoning was never closed (no </think>)")
    else:
        region, source = text, "whole"
    pairs = _ANSWER_PAIR.findall(region)
    if len(pairs) > 1:
        return Extraction(None, "none", f"{len(pairs)} <answer> tags")
    if len(pairs) == 1:
        answer = pairs[0].strip()
        return Extraction(answer or None, "tag", "" if answer else "empty <answer></answer>")
    answer = _ANSWER_TAG.sub(" ", region).strip()
    return Extraction(answer or None, source, "" if answer else "nothing after </think>")


def extract_think(text: str) -> str | None:
    """The reasoning of a completion: the text between the first ``</think>`` and the ``<think>`` before it.

    If the chat template opened the think block in the prompt (Qwen3 thinking models), the completion has no
    ``<think>`` and the reasoning is everything before ``</think>``. ``None`` when there is no ``</think>`` or the
    reasoning is blank.
    """
    close = _THINK_CLOSE.search(text)
    if close is None:
        return None
    head = text[: close.start()]
    opens = list(_THINK_OPEN.finditer(head))
    think = head[opens[-1].end() :] if opens else head
    think = think.strip()
    return think or None


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and matching
# ---------------------------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Collapse whitespace, strip wrapping markdown/quotes and trailing sentence punctuation (repeatedly)."""
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    while True:
        before = text
        text = text.strip().rstrip(_TRAILING).strip()
        for w in _WRAPPERS:
            if len(text) > 2 * len(w) and text.startswith(w) and text.endswith(_QUOTE_PAIRS.get(w, w)):
                text = text[len(w) : -len(w)].strip()
                break
        if text == before:
            return text


def normalize_answer(text: str) -> str:
    """Clean an answer and remove a leading label ("Answer:", "The final answer is", ...)."""
    text = _clean(text)
    stripped = _LABEL.sub("", text, count=1)
    return _clean(stripped) if stripped != text else text


def text_key(text: str) -> str:
    """Comparison key of an option text: NFKC, case-folded, punctuation → space, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    chars = [" " if (c == "`" or unicodedata.category(c).startswith("P")) else c for c in text]
    return " ".join("".join(chars).split())


@dataclass(frozen=True)
class OptionMatch:
    """Which options an answer designates. Exactly one index means a valid single answer."""

    indices: tuple[int, ...]
    #: "text", "letter", "letter+text", "contains", or "none".
    how: str
    reason: str = ""

    @property
    def index(self) -> int | None:
        return self.indices[0] if len(self.indices) == 1 else None


def answer_letter(text: str) -> str | None:
    """The option letter (lower case) if the normalised answer is a letter alone ("B", "(B)", "Option B")."""
    m = _LETTER_ONLY.match(normalize_answer(text))
    return m.group(1).lower() if m else None


def _letter_index(letter: str) -> int:
    return _LETTERS.index(letter.lower())


def match_option(answer: str, choices: Sequence[str], mode: str = "exact") -> OptionMatch:
    """Map an extracted answer onto the option list (0-based indices), following ``docs/rewards.md``.

    In order: (1) the whole normalised answer equals one option's text key; (2) a letter alone ("B", "(B)",
    "Option B"); (3) a marked letter plus text ("B. piano", "(B) piano") whose text equals that letter's option,
    else no match; (4) only with ``mode="contains"``: exactly one option text occurs as a whole-word phrase.
    A letter beyond the number of options matches nothing. Text equal to several options returns all of them
    (ambiguous; callers treat that as no answer).
    """
    if mode not in ("exact", "contains"):
        raise ValueError(f"mode must be 'exact' or 'contains', got {mode!r}")
    norm = normalize_answer(answer)
    if not norm:
        return OptionMatch((), "none", "empty answer")
    keys = [text_key(c) for c in choices]
    key = text_key(norm)
    same = tuple(i for i, k in enumerate(keys) if k and k == key)
    if same:
        return OptionMatch(same, "text", "" if len(same) == 1 else "answer text equals several options")
    m = _LETTER_ONLY.match(norm)
    if m:
        idx = _letter_index(m.group(1))
        if idx >= len(choices):
            return OptionMatch(
                (), "none", f"letter {m.group(1).upper()} out of range ({len(choices)} options)"
            )
        return OptionMatch((idx,), "letter")
    m = _LETTER_TEXT.match(norm)
    if m:
        letter = next(g for g in m.groups()[:4] if g)
        idx = _letter_index(letter)
        if idx >= len(choices):
            return OptionMatch((), "none", f"letter {letter.upper()} out of range ({len(choices)} options)")
        if keys[idx] == text_key(m.group(5)):
            return OptionMatch((idx,), "letter+text")
        return OptionMatch((), "none", f"letter {letter.upper()} and its text disagree")
    if mode == "contains":
        padded = f" {key} "
        found = tuple(i for i, k in enumerate(keys) if k and f" {k} " in padded)
        if len(found) == 1:
            return OptionMatch(found, "contains")
        if found:
            return OptionMatch((), "none", "several options mentioned")
    return OptionMatch((), "none", "answer matches no option")


def resolve_gold(answer: str, choices: Sequence[str] | None) -> int | None:
    """Index of the correct option from the dataset's ``answer`` column (``None`` when there are no choices).

    ``answer`` is the correct option's text; a letter ("B", "(B)", "B. piano") is accepted too when ``choices``
    exist. Raises ``ValueError`` when the answer names no option, several identical options, or a letter beyond
    the options: that is a dataset bug, and silently scoring it 0 would look like a model failure. Call this
    when loading data to fail early.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer: expected the correct option's text (str), got {type(answer).__name__}")
    if not choices:
        return None
    match = match_option(answer, choices, mode="exact")
    if match.index is None:
        detail = match.reason or "no match"
        raise ValueError(
            f"answer={answer!r} does not designate exactly one of choices={list(choices)!r} ({detail}); "
            "fix the dataset row: 'answer' must be the text (or letter) of one option and options must be distinct"
        )
    return match.index
