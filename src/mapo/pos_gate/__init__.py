"""The POS gate g^pos of the attention loss (paper §3.5, eq. 3–4, appendix E).

:func:`pos_gate` gives one 0/1 value per completion token: 1 iff the token belongs to a word whose coarse POS
tag is in the target set (default {NOUN, VERB, ADJ, ADV, NUM, X}). Sub-word tokens are merged into words by
:mod:`mapo.pos_gate.tokens`, words are tagged by :mod:`mapo.pos_gate.taggers` (``"nltk"``, the paper's averaged
perceptron; ``"lexicon"``, built in; or any callable), and :func:`pos_gate_batch` returns a right-padded
``[B, T]`` tensor with a :class:`PosGateReport` (tagger, fraction of gated-on tokens).
"""

from mapo.pos_gate.gate import (
    COARSE_TAGS,
    DEFAULT_TARGET_TAGS,
    PosGateReport,
    pos_gate,
    pos_gate_batch,
    pos_tags,
)
from mapo.pos_gate.taggers import (
    NLTK_INSTALL_COMMAND,
    LexiconTagger,
    NltkDataMissingError,
    NltkTagger,
    Tagger,
    penn_to_coarse,
    resolve_tagger,
)
from mapo.pos_gate.tokens import TokenTable, WordSegmentation, segment_words, token_table

__all__ = [
    "COARSE_TAGS",
    "DEFAULT_TARGET_TAGS",
    "NLTK_INSTALL_COMMAND",
    "LexiconTagger",
    "NltkDataMissingError",
    "NltkTagger",
    "PosGateReport",
    "Tagger",
    "TokenTable",
    "WordSegmentation",
    "penn_to_coarse",
    "pos_gate",
    "pos_gate_batch",
    "pos_tags",
    "resolve_tagger",
    "segment_words",
    "token_table",
]
