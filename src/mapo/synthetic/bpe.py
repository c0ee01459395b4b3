"""Byte-level BPE training in memory: the tokenizer of the synthetic task and of the tiny test models.

Both tokenizers are Qwen-style (``Ġ`` space and ``Ċ`` newline markers over the 256 byte symbols) and are trained
offline from a small corpus with the ``tokenizers`` library, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["train_byte_level_bpe"]


def train_byte_level_bpe(corpus: Iterable[str], vocab_size: int, special_tokens: Iterable[str]) -> str:
    """Train a Qwen-style byte-level BPE (``Ġ``/``Ċ`` markers) on ``corpus`` in memory; returns the tokenizer JSON.

    ``vocab_size`` counts the 256 byte symbols and ``special_tokens`` (which get the first ids after them); the rest
    are merges learnt from ``corpus``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok.to_str()
