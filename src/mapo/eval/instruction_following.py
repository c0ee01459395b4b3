"""Deterministic checks of MMAU-Pro's audio instruction-following (AIF) items, keyed on ``task_identifier``.

The identifiers and their ``kwargs`` are those of the official MMAU-Pro evaluation script (IFEval-style
constraints). The checks follow its semantics with cleaner rules where the official ones misfire; every
difference is listed in ``docs/eval.md`` ("Instruction following"). An identifier that is not listed here, or
an item whose ``kwargs`` lack a needed value, raises :class:`UncheckableInstruction`: the scorer reports such an
item as unscored instead of guessing.

The response checked is the model's final answer (the text after ``</think>``, or the ``<answer>`` contents),
not the reasoning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["CHECKS", "UncheckableInstruction", "check_instruction", "count_sentences", "count_words"]


class UncheckableInstruction(ValueError):
    """The item's instruction cannot be checked deterministically (unknown identifier or missing kwargs)."""


def _int(kwargs: dict[str, Any], key: str) -> int:
    value = kwargs.get(key)
    if value is None:
        raise UncheckableInstruction(f"kwargs has no {key!r} (got {sorted(kwargs)})")
    try:
        return int(round(float(value)))
    except (TypeError, ValueError) as err:
        raise UncheckableInstruction(f"kwargs[{key!r}]={value!r} is not a number") from err


def _str(kwargs: dict[str, Any], key: str) -> str:
    value = kwargs.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UncheckableInstruction(f"kwargs has no {key!r} (got {sorted(kwargs)})")
    return str(value)


def _words_list(kwargs: dict[str, Any], key: str) -> list[str]:
    """A word list: the release's ``"a, b"`` string, or a JSON list."""
    value = kwargs.get(key)
    items = value if isinstance(value, (list, tuple)) else str(value if value is not None else "").split(",")
    words = [str(w).strip() for w in items if str(w).strip()]
    if not words:
        raise UncheckableInstruction(f"kwargs has no {key!r} (got {sorted(kwargs)})")
    return words


def count_words(text: str) -> int:
    """Whitespace-separated words."""
    return len(text.split())


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n|\n(?=\s*[*\-#])")


def count_sentences(text: str) -> int:
    """Sentences: chunks split after ``.``/``!``/``?`` followed by whitespace, at blank lines and before list
    lines. A regular-expression rule (no NLTK data needed), so "Dr. Smith" counts as two sentences."""
    return len([s for s in _SENTENCE_END.split(text.strip()) if s and s.strip(" \n\t*-#")])


def _phrase_count(text: str, phrase: str) -> int:
    """Whole-word, case-insensitive occurrences of ``phrase``."""
    return len(re.findall(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)", text.lower()))


def _letters(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _capital_words(text: str) -> int:
    return sum(1 for w in text.split() if any(c.isalpha() for c in w) and w.isupper())


def _bullets(text: str) -> int:
    return len(re.findall(r"(?m)^\s*[*\-]\s+\S", text))


def _highlights(text: str) -> int:
    # *highlighted* or **highlighted** spans on one line, not bullet markers ("* item").
    return len(re.findall(r"(?<![*\w])\*{1,2}(?=\S)[^*\n]+?(?<=\S)\*{1,2}(?![*\w])", text))


def _sections(text: str, splitter: str) -> int:
    """Number of section headers: ``splitter`` followed by an optional number, e.g. "SECTION 1"."""
    return len(re.findall(re.escape(splitter) + r"\s*\d*", text))


def _postscript(text: str, marker: str) -> bool:
    """A line that starts with the marker ("P.S.", "P.P.S"), compared on letters only."""
    target = re.sub(r"[^a-z]", "", marker.lower())
    return bool(target) and any(
        re.sub(r"[^a-z]", "", line.lower()).startswith(target) for line in text.splitlines() if line.strip()
    )


def _two_responses(text: str) -> bool:
    parts = text.split("******")
    return (
        len(parts) == 2
        and all(p.strip() for p in parts)
        and parts[0].strip().lower() != parts[1].strip().lower()
    )


def _quoted(text: str) -> bool:
    s = text.strip()
    return len(s) >= 2 and ((s[0] == s[-1] == '"') or (s[0] == "“" and s[-1] == "”"))


def _range(value: int, kwargs: dict[str, Any]) -> bool:
    return _int(kwargs, "N1") <= value <= _int(kwargs, "N2")


#: task_identifier → check(response, kwargs, prompt) -> bool.
CHECKS: dict[str, Callable[[str, dict[str, Any], str], bool]] = {
    "Include Keywords": lambda r, k, p: all(_phrase_count(r, w) > 0 for w in _words_list(k, "keywords")),
    "Keyword Frequency": lambda r, k, p: _phrase_count(r, _str(k, "keyword")) == _int(k, "N"),
    "Forbidden Words": lambda r, k, p: (
        not any(_phrase_count(r, w) > 0 for w in _words_list(k, "forbidden_words"))
    ),
    "Number Paragraphs": lambda r, k, p: len([s for s in r.split("***") if s.strip()]) == _int(k, "N"),
    "Number Words (at least)": lambda r, k, p: count_words(r) >= _int(k, "N"),
    "Number Words (at most)": lambda r, k, p: count_words(r) <= _int(k, "N"),
    "Number Words (range)": lambda r, k, p: _range(count_words(r), k),
    "Number Sentences (at least)": lambda r, k, p: count_sentences(r) >= _int(k, "N"),
    "Number Sentences (at most)": lambda r, k, p: count_sentences(r) <= _int(k, "N"),
    "Number Sentences (range)": lambda r, k, p: _range(count_sentences(r), k),
    "Postscript": lambda r, k, p: _postscript(r, _str(k, "postscript_marker")),
    "Number Placeholder": lambda r, k, p: len(re.findall(r"\[[^\[\]\n]+\]", r)) >= _int(k, "N"),
    "Number Bullets": lambda r, k, p: _bullets(r) == _int(k, "N"),
    "Title": lambda r, k, p: bool(re.search(r"<<[^<>\n]+>>", r)),
    "Minimum Number Highlighted Section": lambda r, k, p: _highlights(r) >= _int(k, "N"),
    "Multiple Sections": lambda r, k, p: _sections(r, _str(k, "section_splitter")) == _int(k, "N"),
    "Repeat Prompt": lambda r, k, p: bool(p.strip()) and _letters(r).startswith(_letters(p)),
    "Two Responses": lambda r, k, p: _two_responses(r),
    "All Uppercase": lambda r, k, p: r.isupper(),
    "All Lowercase": lambda r, k, p: r.islower(),
    "All-capital Words (at least)": lambda r, k, p: _capital_words(r) >= _int(k, "N"),
    "All-capital Words (at most)": lambda r, k, p: _capital_words(r) <= _int(k, "N"),
    "All-capital Words (range)": lambda r, k, p: _range(_capital_words(r), k),
    "Start Checker": lambda r, k, p: _letters(r).startswith(_letters(_str(k, "start_phrase"))),
    "End Checker": lambda r, k, p: _letters(r).endswith(_letters(_str(k, "end_phrase"))),
    "Quotation": lambda r, k, p: _quoted(r),
    "No Commas": lambda r, k, p: "," not in r and "，" not in r,
}


def check_instruction(
    task_identifier: str | None, kwargs: dict[str, Any] | None, response: str, prompt: str = ""
) -> bool:
    """Whether ``response`` satisfies the instruction ``task_identifier`` with parameters ``kwargs``.

    ``prompt`` is the item's question (used by "Repeat Prompt"). Raises :class:`UncheckableInstruction` for an
    unknown identifier or missing parameters.
    """
    if not task_identifier or task_identifier not in CHECKS:
        raise UncheckableInstruction(f"unknown task_identifier {task_identifier!r}")
    return bool(CHECKS[task_identifier](response, dict(kwargs or {}), prompt))
