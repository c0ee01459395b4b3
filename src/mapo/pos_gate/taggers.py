"""Word-level POS taggers returning coarse tags (NLTK's universal-style set: NOUN, VERB, ADJ, ADV, PRON, DET,
ADP, CONJ, NUM, PART, PUNCT, X).

* :class:`NltkTagger` — the paper's tagger (appendix E): NLTK's averaged perceptron (``nltk.pos_tag``) with the
  Penn → coarse mapping of the public release (:func:`penn_to_coarse`). Its data is never downloaded here.
* :class:`LexiconTagger` — built in, needs no data: closed-class English function words get their usual Penn
  tag's coarse class, numbers NUM, every other word NOUN (open class). It is a stand-in for the paper's tagger
  that gates the same function words off; it does not tell nouns from verbs (both gate on by default).
* any callable ``list[str] -> list[str]`` of coarse tags (one per word).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = [
    "NLTK_INSTALL_COMMAND",
    "LexiconTagger",
    "NltkDataMissingError",
    "NltkTagger",
    "Tagger",
    "penn_to_coarse",
    "resolve_tagger",
]

NLTK_INSTALL_COMMAND = "python -m nltk.downloader averaged_perceptron_tagger_eng"
_NLTK_RESOURCE = "taggers/averaged_perceptron_tagger_eng/"


class Tagger(Protocol):
    """A word tagger: ``tagger(words) -> coarse tags``, with a ``name`` for reports."""

    name: str

    def __call__(self, words: list[str]) -> list[str]: ...


# ---------------------------------------------------------------------------------------------------------------
# Penn Treebank → coarse (reference release, research note §6.2 step 5)
# ---------------------------------------------------------------------------------------------------------------

_PENN_EXACT = {
    **dict.fromkeys([".", ",", ":", "``", "''", "-LRB-", "-RRB-", "#", "$"], "PUNCT"),
    **dict.fromkeys(["PRP", "PRP$", "WP", "WP$"], "PRON"),
    **dict.fromkeys(["DT", "PDT", "WDT"], "DET"),
    **dict.fromkeys(["IN", "TO"], "ADP"),
    "CC": "CONJ",
    "CD": "NUM",
    "RP": "PART",
}
_PENN_PREFIX = (("NN", "NOUN"), ("VB", "VERB"), ("JJ", "ADJ"), ("RB", "ADV"))


def penn_to_coarse(tag: str) -> str:
    """Map a Penn Treebank tag to the coarse set: NN*→NOUN, VB*→VERB, JJ*→ADJ, RB*→ADV, PRP/PRP$/WP/WP$→PRON,
    DT/PDT/WDT→DET, IN/TO→ADP, CC→CONJ, CD→NUM, RP→PART, punctuation tags→PUNCT, everything else (MD, EX, FW,
    LS, POS, SYM, UH, WRB, ``(``, ``)``) → X, as the public release does."""
    coarse = _PENN_EXACT.get(tag)
    if coarse is not None:
        return coarse
    for prefix, value in _PENN_PREFIX:
        if tag.startswith(prefix):
            return value
    return "X"


# ---------------------------------------------------------------------------------------------------------------
# Built-in lexicon tagger
# ---------------------------------------------------------------------------------------------------------------

# Closed-class words with the coarse class of their most frequent Penn tag (so the lexicon gates off what the
# paper's tagger usually gates off). Subordinating conjunctions are Penn IN, hence ADP.
_LEXICON: dict[str, str] = {
    **dict.fromkeys(
        "a an the this that these those each every either neither some any no all both another which whichever "
        "whatever".split(),
        "DET",
    ),
    **dict.fromkeys(
        "i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its "
        "itself we us our ours ourselves they them their theirs themselves who whom whose what whoever "
        "whomever".split(),
        "PRON",
    ),
    **dict.fromkeys(
        "of in on at by for with about against between into through during before after above below to from "
        "over under around among across along behind beyond near within without upon via per than since until "
        "till towards toward onto despite except inside outside throughout unlike like as if because although "
        "though while whereas unless whether".split(),
        "ADP",
    ),
    **dict.fromkeys("and or but nor".split(), "CONJ"),
    **dict.fromkeys("up down out off".split(), "PART"),
    **dict.fromkeys(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
        "million billion".split(),
        "NUM",
    ),
}
_NUMBER = re.compile(r"^[+-]?\d+(?:[.,:]\d+)*$")


class LexiconTagger:
    """Data-free tagger: closed-class function words → DET/PRON/ADP/CONJ/PART, numbers → NUM, else NOUN.

    Case-insensitive; ``’`` is read as ``'``. ``extra`` adds or overrides entries (lower-case word → coarse tag).
    """

    name = "lexicon"

    def __init__(self, extra: dict[str, str] | None = None):
        self.lexicon = {**_LEXICON, **{k.lower(): v for k, v in (extra or {}).items()}}

    def tag_word(self, word: str) -> str:
        low = word.lower()
        tag = self.lexicon.get(low)
        if tag is not None:
            return tag
        if _NUMBER.match(low):
            return "NUM"
        if "’" in low:
            return self.lexicon.get(low.replace("’", "'"), "NOUN")
        return "NOUN"

    def __call__(self, words: list[str]) -> list[str]:
        get, tag_word = self.lexicon.get, self.tag_word
        return [get(w.lower()) or tag_word(w) for w in words]


# ---------------------------------------------------------------------------------------------------------------
# NLTK averaged perceptron
# ---------------------------------------------------------------------------------------------------------------


class NltkDataMissingError(LookupError):
    """NLTK or its averaged-perceptron data is not installed; the message gives the install command."""


class NltkTagger:
    """The paper's tagger: NLTK's averaged perceptron, Penn tags mapped by :func:`penn_to_coarse`.

    Args:
        model: a ``nltk.tag.perceptron.PerceptronTagger`` (e.g. one trained with ``PerceptronTagger(load=False)``
            and ``.train(...)``); ``None`` uses ``nltk.pos_tag`` with the installed English model, as the paper.

    Raises:
        NltkDataMissingError: at construction, if ``nltk`` or ``averaged_perceptron_tagger_eng`` is missing. The
            data is never downloaded automatically.
    """

    name = "nltk"

    def __init__(self, model: Any | None = None):
        try:
            import nltk
        except ImportError as err:  # pragma: no cover - nltk is a test dependency
            raise NltkDataMissingError(
                "tagger='nltk' needs the nltk package: pip install 'mapo-rl[nltk]' (or pip install nltk), then "
                f"{NLTK_INSTALL_COMMAND}; or use tagger='lexicon'"
            ) from err
        self._model = model
        if model is None:
            try:
                nltk.data.find(_NLTK_RESOURCE)
            except LookupError:
                searched = ", ".join(map(str, nltk.data.path)) or "(empty nltk.data.path)"
                raise NltkDataMissingError(
                    "NLTK's averaged-perceptron tagger data (averaged_perceptron_tagger_eng) is not installed. "
                    f"Install it with:\n    {NLTK_INSTALL_COMMAND}\n(or point NLTK_DATA at a folder that has "
                    f"it), or use tagger='lexicon'. Searched: {searched}"
                ) from None
            self._pos_tag = nltk.pos_tag
        elif not hasattr(model, "tag"):
            raise TypeError(f"model must be an nltk PerceptronTagger (with .tag), got {type(model).__name__}")

    def penn_tags(self, words: list[str]) -> list[str]:
        """Penn Treebank tags, one per word, from a single tagging call over the whole completion."""
        if not words:
            return []
        pairs = self._model.tag(words) if self._model is not None else self._pos_tag(words)
        return [tag for _, tag in pairs]

    def __call__(self, words: list[str]) -> list[str]:
        return [penn_to_coarse(t) for t in self.penn_tags(words)]


class _NamedTagger:
    def __init__(self, func: Callable[[list[str]], Sequence[str]], name: str):
        self._func, self.name = func, name

    def __call__(self, words: list[str]) -> list[str]:
        return list(self._func(words))


_BUILTIN: dict[str, Callable[[], Tagger]] = {"lexicon": LexiconTagger, "nltk": NltkTagger}
_BUILT: dict[str, Tagger] = {}  # successfully built default taggers (a failed NLTK load is retried next time)


def resolve_tagger(tagger: str | Callable[[list[str]], Sequence[str]]) -> Tagger:
    """``"lexicon"``, ``"nltk"`` or a callable (its ``name`` attribute, else ``__name__``, names it in reports)."""
    if isinstance(tagger, str):
        if tagger not in _BUILTIN:
            raise ValueError(
                f"tagger must be 'lexicon', 'nltk' or a callable list[str] -> list[str], got {tagger!r}"
            )
        if tagger not in _BUILT:
            _BUILT[tagger] = _BUILTIN[tagger]()
        return _BUILT[tagger]
    if not callable(tagger):
        raise TypeError(f"tagger must be a name or a callable, got {type(tagger).__name__}")
    if isinstance(getattr(tagger, "name", None), str):
        return tagger  # type: ignore[return-value]
    return _NamedTagger(tagger, getattr(tagger, "__name__", type(tagger).__name__))
