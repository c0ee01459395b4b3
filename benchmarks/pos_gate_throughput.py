"""Throughput of the POS gate (tokens per second on CPU) for 1k completions of 500 tokens.

Run:  .venv/bin/python benchmarks/pos_gate_throughput.py [--n 1000] [--length 500]

A byte-level BPE (Qwen-style, ``Ġ``/``Ċ`` markers, vocab 2,000) is trained in the script on synthetic reasoning
text, so nothing is downloaded. The completions mix words, numbers, punctuation, newlines, a multi-byte
apostrophe and the ``<think>``/``<answer>`` special tokens. Timed: ``pos_gate_batch`` end to end (word merging,
tagging, tensor). The token-text cache is warmed by a first untimed pass, as in training after a few steps;
the cold pass is printed too. The NLTK tagger (the paper's) is timed with its installed English model if present
(it is never downloaded), else with ``--nltk-trained``: a perceptron trained offline on a small tagged corpus
(``mapo.testing.tiny_perceptron_tagger``; same code path and per-word cost, not the same accuracy).
Target: >= 50k tokens/s with the lexicon tagger.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

TARGET_TOKENS_PER_S = 50_000

_WORDS = (
    "the audio features a dog barking twice then car horn in distance first melody starts low and rises next "
    "it falls back to note woman speaks calmly while rain on metal roof answer is option violin piano flute "
    "drums let me think step by step about pitch rhythm speaker emotion there are beeps each about seconds long "
    "followed silence so count three sound loud metallic factory machinery horse drawn wagon train airplane wind "
    "turbine engine rooster crowing second note higher than interval fifth however but not because which could "
    "would should might suggests consistent with low-frequency hum high-pitched whirring"
).split()
_PUNCT = [",", ".", ";", ":", "?", "!", " -", " (", ")"]


def _sentence(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(6, 18)):
        r = rng.random()
        if r < 0.06:
            out.append(str(rng.choice([0.5, 3, 12, 2024, 1000, 44.1])))
        elif r < 0.08:
            out.append("it’s")
        else:
            out.append(rng.choice(_WORDS))
        if rng.random() < 0.08:
            out[-1] += rng.choice(_PUNCT)
    text = " ".join(out)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".\n", "\n\n", "?"])


def _text(rng: random.Random, n_sentences: int = 60) -> str:
    body = " ".join(_sentence(rng) for _ in range(n_sentences))
    return f"<think>{body}</think><answer>{rng.choice(_WORDS)}</answer>"


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    specials = ["<|endoftext|>", "<|im_end|>", "<think>", "</think>", "<answer>", "</answer>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_text(rng, 10) for _ in range(300)], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", additional_special_tokens=specials
    )


def _completions(tokenizer, n: int, length: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        ids = tokenizer(_text(rng), add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            out.append(ids[: length - 1] + [tokenizer.convert_tokens_to_ids("<|im_end|>")])
    return out


def _time(completions, tokenizer, tagger) -> tuple[float, object]:
    from mapo.pos_gate import pos_gate_batch

    start = time.perf_counter()
    _, report = pos_gate_batch(completions, tokenizer, tagger=tagger)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="completions")
    parser.add_argument("--length", type=int, default=500, help="tokens per completion")
    parser.add_argument(
        "--nltk-trained",
        action="store_true",
        help="if NLTK's data is missing, time a perceptron trained offline",
    )
    args = parser.parse_args()

    from mapo.pos_gate import NltkDataMissingError, NltkTagger
    from mapo.pos_gate.tokens import token_table
    from mapo.testing import tiny_perceptron_tagger

    tokenizer = _tokenizer()
    completions = _completions(tokenizer, args.n, args.length)
    n_tokens = sum(map(len, completions))
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(
        f"workload: {len(completions)} completions x {args.length} tokens = {n_tokens:,} tokens, byte-level BPE "
        f"vocab {len(tokenizer)}"
    )

    cold, _ = _time(completions, tokenizer, "lexicon")
    print(
        f"lexicon (cold token cache, {len(token_table(tokenizer))} ids cached after): {n_tokens / cold:,.0f} tok/s"
    )
    warm, report = _time(completions, tokenizer, "lexicon")
    ok = "OK" if n_tokens / warm >= TARGET_TOKENS_PER_S else "BELOW TARGET"
    print(
        f"lexicon (warm): {n_tokens / warm:,.0f} tok/s in {warm:.2f} s  [target >= {TARGET_TOKENS_PER_S:,} tok/s: "
        f"{ok}]  on_fraction={report.on_fraction:.3f} words={report.n_words:,}"
    )
    try:
        tagger, source = NltkTagger(), "installed averaged_perceptron_tagger_eng"
    except NltkDataMissingError:
        if not args.nltk_trained:
            print(
                "nltk: skipped (averaged_perceptron_tagger_eng not installed: "
                "python -m nltk.downloader averaged_perceptron_tagger_eng; or pass --nltk-trained)"
            )
            return
        tagger, source = NltkTagger(model=tiny_perceptron_tagger()), "mapo.testing.tiny_perceptron_tagger"
    t, report = _time(completions, tokenizer, tagger)
    print(f"nltk ({source}): {n_tokens / t:,.0f} tok/s in {t:.2f} s  on_fraction={report.on_fraction:.3f}")


if __name__ == "__main__":
    main()
