"""POS gate g^pos (appendix E): word merging of sub-word tokens, taggers, batch tensor and report."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest
import torch

from mapo.pos_gate import (
    DEFAULT_TARGET_TAGS,
    NLTK_INSTALL_COMMAND,
    LexiconTagger,
    NltkDataMissingError,
    NltkTagger,
    penn_to_coarse,
    pos_gate,
    pos_gate_batch,
    pos_tags,
    segment_words,
    token_table,
)
from mapo.testing import _CORPUS, tiny_bpe_tokenizer, tiny_perceptron_tagger

SENTENCES = [
    "The dog barks twice.",
    "There are 3 beeps,\nthen silence.",
    "<think>It is a piano.</think><answer>B</answer><|im_end|>",
    "It’s a horse-drawn wagon, and it isn't loud: 0.5 s at 1,000 Hz.",
    "Count: 3 beeps\n\nso the answer is B.",
    "<think>First, the melody rises; next (after 2 notes) it falls!</think>\n<answer>C</answer>",
    "Option A: a violin. Option B: a piano.\n\n\nI think it's B -- the piano.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024.",
]

# Hand-checked with the lexicon tagger: alphanumeric chunks of the gated-on tokens, and of the gated-off tokens.
HAND_CHECKED = {
    "The dog barks twice.": (["dog", "barks", "twice"], ["The"]),
    "There are 3 beeps,\nthen silence.": (["There", "are", "3", "beeps", "then", "silence"], []),
    "<think>It is a piano.</think><answer>B</answer><|im_end|>": (["is", "piano", "B"], ["It", "a"]),
    "It’s a horse-drawn wagon, and it isn't loud: 0.5 s at 1,000 Hz.": (
        ["It", "s", "horse", "drawn", "wagon", "isn", "t", "loud", "0", "5", "s", "1", "000", "Hz"],
        ["a", "and", "it", "at"],
    ),
    "Count: 3 beeps\n\nso the answer is B.": (["Count", "3", "beeps", "so", "answer", "is", "B"], ["the"]),
}


@pytest.fixture(scope="module")
def bpe():
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module")
def metaspace():
    """A sentencepiece-style Unigram (``▁`` markers) trained here; ``<think>`` is a NON-special added token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_end|>", "</think>", "<answer>", "</answer>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=300,
        special_tokens=specials,
        unk_token="<unk>",
        initial_alphabet=list("’\nzHq"),
        show_progress=False,
    )
    tok.train_from_iterator(
        _CORPUS * 4 + ["It’s a horse-drawn wagon, isn't it?\nCount: 1,000"], trainer=trainer
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=specials[2:],
    )
    fast.add_tokens(["<think>"])  # Qwen3 style: <think> is added but not "special"
    return fast


@pytest.fixture(scope="module")
def byte_fallback():
    """A hand-made sentencepiece Unigram with ``<0xNN>`` byte-fallback pieces (Llama style decoder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁", "▁the", "▁dog", "▁bark", "s", "▁it", "▁loud", "▁a", "▁of", "."] + list(
        "abcdefghijklmnopqrstuvwxyz"
    )
    vocab = [(p, -1.0 if p.startswith("▁") and len(p) > 1 else -5.0) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def _word_chars(c: str) -> bool:
    return c.isalnum() or unicodedata.category(c)[0] == "M"


# Independent character-level reference: words by regex over the text, tokens mapped by offsets.
_NAIVE_WORD = re.compile(r"[^\W_]+(?:(?:['’\-‐]|(?<=\d)[.,:](?=\d))[^\W_]+)*")


def _naive_gate(text: str, tokenizer, targets=DEFAULT_TARGET_TAGS) -> list[int]:
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    special = set(token_table(tokenizer).special_ids)
    masked = list(text)
    for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        if tid in special:
            masked[s:e] = " " * (e - s)
    masked = "".join(masked)
    words = list(_NAIVE_WORD.finditer(masked))
    tags = LexiconTagger()([m.group() for m in words])
    on_chars = set()
    for m, tag in zip(words, tags):
        if tag in targets:
            on_chars.update(i for i in range(m.start(), m.end()) if _word_chars(text[i]))
    # A lone "▁" piece has no characters of its own (a prepended one is given the first character's offsets).
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    return [
        0 if tid in special or piece == "▁" else int(any(i in on_chars for i in range(s, e)))
        for tid, piece, (s, e) in zip(enc["input_ids"], pieces, enc["offset_mapping"])
    ]


def _pieces(ids, tokenizer) -> list[str]:
    """Each token's own text ("" for added/special tokens), with its leading space for ``▁`` pieces."""
    added = set(tokenizer.added_tokens_decoder)
    out = []
    for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        piece = "" if i in added else tokenizer.decode([i])
        out.append(" " + piece.lstrip(" ") if tok.startswith("▁") else piece)
    return out


def _chunks(ids, gate, tokenizer, on: bool) -> list[str]:
    """Alphanumeric chunks of the tokens whose gate is ``on`` (the other tokens act as separators)."""
    text = "".join(p if bool(g) == on else "|" for p, g in zip(_pieces(ids, tokenizer), gate))
    return re.findall(r"[^\W_]+", text)


@pytest.mark.parametrize("tok_name", ["bpe", "metaspace"])
@pytest.mark.parametrize("text", SENTENCES)
def test_gate_matches_character_level_reference(request, tok_name, text):
    tokenizer = request.getfixturevalue(tok_name)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    gate = pos_gate(ids, tokenizer)
    assert len(gate) == len(ids)
    assert gate == _naive_gate(text, tokenizer)


@pytest.mark.parametrize("tok_name", ["bpe", "metaspace"])
@pytest.mark.parametrize("text", list(HAND_CHECKED))
def test_hand_checked_gates(request, tok_name, text):
    tokenizer = request.getfixturevalue(tok_name)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    gate = pos_gate(ids, tokenizer)
    on, off = HAND_CHECKED[text]
    assert _chunks(ids, gate, tokenizer, on=True) == on
    assert _chunks(ids, gate, tokenizer, on=False) == off


def test_markers_specials_and_punctuation(bpe, metaspace):
    text = "<think>Loud.\n\nBeeps</think><answer>B</answer><|im_end|>"
    for tokenizer in (bpe, metaspace):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        tokens = tokenizer.convert_ids_to_tokens(ids)
        gate = pos_gate(ids, tokenizer)
        by_token = dict(zip(tokens, gate))
        for marker in ("<think>", "</think>", "<answer>", "</answer>", "<|im_end|>", "."):
            assert by_token[marker] == 0, marker
        # Newlines separate words: "Loud" and "Beeps" are two words, not "LoudBeeps" or "\n\nBeeps".
        assert segment_words(ids, tokenizer).words == ["Loud", "Beeps", "B"]


def test_byte_fallback_pieces_are_joined(byte_fallback):
    text = "the dog’s bark"
    ids = byte_fallback(text, add_special_tokens=False)["input_ids"]
    tokens = byte_fallback.convert_ids_to_tokens(ids)
    assert ["<0xE2>", "<0x80>", "<0x99>"] == [t for t in tokens if t.startswith("<0x")]
    seg = segment_words(ids, byte_fallback)
    assert seg.words == ["the", "dog’s", "bark"]
    gate = pos_gate(ids, byte_fallback)
    assert [g for t, g in zip(tokens, gate) if t.startswith("<0x")] == [0, 0, 0]
    assert gate == [0 if t in ("▁the", "<0xE2>", "<0x80>", "<0x99>") else 1 for t in tokens]
    assert token_table(byte_fallback).scheme == "metaspace"


def test_alignment_length_for_arbitrary_ids(bpe, metaspace):
    rng = random.Random(0)
    for tokenizer in (bpe, metaspace):
        vocab = len(tokenizer)
        special = token_table(tokenizer).special_ids
        for _ in range(200):
            ids = [rng.randrange(0, vocab + 40) for _ in range(rng.randrange(0, 40))]
            gate = pos_gate(ids, tokenizer)
            assert len(gate) == len(ids)
            assert all(g == 0 for i, g in zip(ids, gate) if i >= vocab or i in special)
            assert set(gate) <= {0, 1}


def test_tensor_input_cache_and_tags():
    bpe = tiny_bpe_tokenizer()  # a fresh tokenizer object, hence a fresh cache
    ids = bpe("The dog barks twice.", add_special_tokens=False)["input_ids"]
    assert pos_gate(torch.tensor(ids), bpe) == pos_gate(ids, bpe)
    table = token_table(bpe)
    assert token_table(bpe) is table and len(table) == len(set(ids))
    tags = pos_tags(ids, bpe)
    assert len(tags) == len(ids)
    assert tags[0] == "DET" and tags[-1] is None and set(tags[1:-1]) == {"NOUN"}
    assert pos_gate([], bpe) == []


def test_target_tags(bpe):
    ids = bpe("There are 3 beeps, then 100 more.", add_special_tokens=False)["input_ids"]
    only_num = pos_gate(ids, bpe, target_tags=("NUM",))
    assert _chunks(ids, only_num, bpe, on=True) == ["3", "100"]
    with pytest.raises(ValueError, match="unknown tags \\['NOUNS'\\]"):
        pos_gate(ids, bpe, target_tags=("NOUNS",))
    with pytest.raises(TypeError, match="collection of tags"):
        pos_gate(ids, bpe, target_tags="NOUN")


def test_lexicon_tagger():
    tagger = LexiconTagger()
    words = ["The", "dog", "of", "it", "and", "3", "1,000", "0.5", "seven", "Whose", "up", "rooster", "it’s"]
    assert tagger(words) == [
        "DET", "NOUN", "ADP", "PRON", "CONJ", "NUM", "NUM", "NUM", "NUM", "PRON", "PART", "NOUN", "NOUN",
    ]  # fmt: skip
    assert LexiconTagger(extra={"Rooster": "X"})(["rooster"]) == ["X"]


def test_custom_tagger_and_errors(bpe):
    def shout(words):
        return ["NOUN" if w.isupper() else "DET" for w in words]

    ids = bpe("The DOG barks", add_special_tokens=False)["input_ids"]
    gate, report = pos_gate_batch([ids], bpe, tagger=shout)
    assert report.tagger == "shout"
    assert _chunks(ids, gate[0].int().tolist(), bpe, on=True) == ["DOG"]
    with pytest.raises(ValueError, match="returned 0 tags for 3 words"):
        pos_gate(ids, bpe, tagger=lambda words: [])
    with pytest.raises(ValueError, match="tagger must be 'lexicon', 'nltk'"):
        pos_gate(ids, bpe, tagger="spacy")


def test_batch_tensor_and_report(bpe):
    rows = [bpe(t, add_special_tokens=False)["input_ids"] for t in SENTENCES[:4]]
    rows.append(bpe(", . ; !", add_special_tokens=False)["input_ids"])  # no word at all
    rows.append([len(bpe) + 3, len(bpe) + 4])  # ids beyond the tokenizer (padded model vocab)
    gate, report = pos_gate_batch(rows, bpe)
    width = max(map(len, rows))
    assert gate.shape == (len(rows), width) and gate.dtype == torch.float32
    for b, ids in enumerate(rows):
        assert gate[b, : len(ids)].tolist() == pos_gate(ids, bpe)
        assert gate[b, len(ids) :].eq(0).all()
    n_tokens = sum(map(len, rows))
    assert report.tagger == "lexicon" and report.alignment == "byte_level"
    assert (report.n_sequences, report.n_tokens, report.n_on) == (len(rows), n_tokens, int(gate.sum()))
    assert report.on_fraction == pytest.approx(gate.sum().item() / n_tokens)
    assert report.n_sequences_all_off == 2 and report.n_unknown_ids == 2
    assert report.as_metrics()["pos_gate/on_fraction"] == report.on_fraction
    padded, _ = pos_gate_batch(rows, bpe, pad_to=width + 5, dtype=torch.bool)
    assert padded.shape == (len(rows), width + 5) and padded.dtype == torch.bool
    with pytest.raises(ValueError, match="pad_to=2 is shorter"):
        pos_gate_batch(rows, bpe, pad_to=2)
    empty, report = pos_gate_batch([[], []], bpe)
    assert empty.shape == (2, 0) and report.on_fraction == 0.0


# ---------------------------------------------------------------------------------------------------------------
# NLTK averaged perceptron (trained here on a small Penn-tagged corpus; the real data is never downloaded)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_perceptron():
    return tiny_perceptron_tagger()


def test_penn_to_coarse():
    table = {
        "NN": "NOUN", "NNS": "NOUN", "NNP": "NOUN", "NNPS": "NOUN", "VB": "VERB", "VBD": "VERB", "VBZ": "VERB",
        "JJ": "ADJ", "JJR": "ADJ", "RB": "ADV", "RBS": "ADV", "PRP": "PRON", "PRP$": "PRON", "WP": "PRON",
        "WP$": "PRON", "DT": "DET", "PDT": "DET", "WDT": "DET", "IN": "ADP", "TO": "ADP", "CC": "CONJ",
        "CD": "NUM", "RP": "PART", ".": "PUNCT", ",": "PUNCT", ":": "PUNCT", "``": "PUNCT", "''": "PUNCT",
        "-LRB-": "PUNCT", "-RRB-": "PUNCT", "#": "PUNCT", "$": "PUNCT", "MD": "X", "EX": "X", "FW": "X",
        "LS": "X", "POS": "X", "SYM": "X", "UH": "X", "WRB": "X", "(": "X", ")": "X",
    }  # fmt: skip
    assert {tag: penn_to_coarse(tag) for tag in table} == table


def test_nltk_tagger_with_trained_model(bpe, trained_perceptron):
    tagger = NltkTagger(model=trained_perceptron)
    text = "<think>The dog could be in the room and it barks loudly.</think>"
    ids = bpe(text, add_special_tokens=False)["input_ids"]
    seg = segment_words(ids, bpe)
    assert tagger.penn_tags(seg.words) == ["DT", "NN", "MD", "VB", "IN", "DT", "NN", "CC", "PRP", "VBZ", "RB"]
    gate, report = pos_gate_batch([ids], bpe, tagger=tagger)
    assert report.tagger == "nltk"
    on = _chunks(ids, gate[0].int().tolist(), bpe, on=True)
    assert on == ["dog", "could", "be", "room", "barks", "loudly"]  # MD → X is in the paper's target set
    assert _chunks(ids, gate[0].int().tolist(), bpe, on=False) == ["The", "in", "the", "and", "it"]
    coarse = tagger(seg.words)
    assert coarse == ["DET", "NOUN", "X", "VERB", "ADP", "DET", "NOUN", "CONJ", "PRON", "VERB", "ADV"]
    assert pos_tags(ids, bpe, tagger=tagger) == [coarse[w] if w >= 0 else None for w in seg.token_word]


def test_nltk_missing_data_error_says_how_to_install(bpe, monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("must never download"))
    with pytest.raises(NltkDataMissingError) as err:
        NltkTagger()
    assert NLTK_INSTALL_COMMAND in str(err.value)
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng" in str(err.value)
    assert isinstance(err.value, LookupError)
    ids = bpe("The dog", add_special_tokens=False)["input_ids"]
    with pytest.raises(NltkDataMissingError, match="averaged_perceptron_tagger_eng"):
        pos_gate(ids, bpe, tagger="nltk")
    with pytest.raises(TypeError, match="PerceptronTagger"):
        NltkTagger(model=object())
