"""The tiny offline tokenizer: a Qwen-style byte-level BPE trained in memory on a small corpus, with the Qwen special
tokens (no download).
"""

from __future__ import annotations

from functools import lru_cache

from mapo.synthetic.bpe import train_byte_level_bpe

#: Special tokens shared by the tiny tokenizers (Qwen naming). Their ids are the first ids after the BPE vocab.
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


#: Template tags added as ordinary (non-special) tokens, as in Qwen3's tokenizer: decoding with
#: ``skip_special_tokens=True`` (what TRL does) keeps them, so the format and accuracy rewards can see them.
TINY_TEMPLATE_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")


_CORPUS = [
    "The audio features a dog barking twice, then a car horn in the distance.",
    "First, the melody starts low and rises; next, it falls back to the first note.",
    "A woman speaks calmly while rain falls on a metal roof. The answer is B.",
    "Option A: a violin. Option B: a piano. Option C: a flute. Option D: drums.",
    "Let me think step by step about the pitch, the rhythm and the speaker's emotion.",
    "There are 3 beeps, each about 0.5 seconds long, followed by silence.\nSo the count is three.",
    "<think>The sound is loud and metallic.</think><answer>Factory machinery</answer>",
    "Horse-drawn wagon, train, airplane, wind turbine, car engine, rooster crowing.",
    "Is the second note higher than the first? Yes, it is higher; the interval is a fifth.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024. Punctuation: , . ; : ! ? ( ) [ ] ' \" - --",
]


@lru_cache(maxsize=4)
def _trained_bpe(vocab_size: int) -> str:
    """The tiny tokenizer's JSON (cached: training takes ~50 ms)."""
    return train_byte_level_bpe(_CORPUS * 4, vocab_size, TINY_SPECIAL_TOKENS)


def tiny_bpe_tokenizer(vocab_size: int = 400, named_tokens: dict[str, str] | None = None):
    """A Qwen-style byte-level BPE tokenizer (``Ġ`` space and ``Ċ`` newline markers) trained offline.

    All :data:`TINY_SPECIAL_TOKENS` are special tokens; ``audio_token`` etc. are exposed as named extra special
    tokens because the Qwen processors read ``tokenizer.audio_token``. ``named_tokens`` (e.g.
    ``{"audio_token": "<|audio_pad|>"}``) become attributes ``tokenizer.audio_token`` / ``audio_token_id``.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_bpe(vocab_size))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(TINY_SPECIAL_TOKENS[1:]),
        **({"model_specific_special_tokens": named_tokens} if named_tokens else {}),
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TINY_TEMPLATE_TOKENS])
    tok.padding_side = "left"
    return tok


def _special_id(tokenizer, token: str) -> int:
    idx = tokenizer.convert_tokens_to_ids(token)
    if idx is None or idx == tokenizer.unk_token_id:
        raise KeyError(f"{token!r} is not in the tiny tokenizer")
    return int(idx)
