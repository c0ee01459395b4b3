"""The tone-melody task: audio QA whose chain of thought has a strong language prior and a late trap.

Each clip is a melody of ``K`` tones drawn from a 5-note pentatonic scale (C5 D5 F5 G5 Bb5), one tone per
``clip_seconds / K`` segment, with a random detune, a random 2nd harmonic and white noise at a random SNR, as a
real 16 kHz waveform (the processor turns it into Whisper log-mel features). The question asks for the last note;
the reference completion walks the melody note by note in the paper's template::

    <think> first C second F third Bb fourth D fifth G sixth F</think><answer>F</answer>

Every note token (``ĠC`` …) needs the audio; everything else is scaffolding (see :func:`note_token_labels`).

Language prior (training distribution, also the ``prior`` evaluation split): each melody draws a step
``s ∈ {±1, ±2}`` (scale degrees, cyclic over the 5 notes); every next note is ``previous + s`` with probability
``prior`` (p) and a uniformly drawn *other* note otherwise. After two notes the text already written predicts the
rest, so a model that stops listening is right most of the time. The ``trap`` split follows the pattern exactly
for the first ``K - trap_tail`` notes and then breaks it: each of the last ``trap_tail`` notes differs both from
the continuation of the chain written so far (``previous + s``) and from the continuation of the last clean note
(what a model that hallucinated the previous note would write). A model that follows the prior late in the chain
therefore gets trap items wrong by construction (MAPO §3.2, "late-stage modality collapse").

Everything is deterministic given ``seed`` (one ``numpy`` generator per split, seeded from ``(seed, split)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "NOTE_FREQS_HZ",
    "NOTE_NAMES",
    "ORDINALS",
    "SPLITS",
    "SyntheticTask",
    "TaskConfig",
    "completion_text",
    "make_split",
    "make_task",
    "note_token_labels",
    "parse_completion",
    "prompt_of",
    "question_text",
    "sample_melody",
    "synthesize_clip",
    "task_corpus",
]

#: Scale degrees of the "suspended" pentatonic on C5 (C D F G Bb) and their equal-tempered frequencies.
#: Pentatonic: no semitone neighbours, so adjacent notes are ≥ 64 Hz (≥ 2.7 mel bins of Whisper's 128-bin
#: filterbank) apart. No "A": POS taggers read a lone "A" as a determiner, and the MAPO POS gate would then drop
#: those note tokens from the attention loss (measured with ``mapo.pos_gate``'s lexicon tagger).
NOTE_NAMES: tuple[str, ...] = ("C", "D", "F", "G", "Bb")
NOTE_FREQS_HZ: tuple[float, ...] = (523.25, 587.33, 698.46, 783.99, 932.33)
#: Step markers of the chain of thought (one BPE token each); they bound the number of notes.
ORDINALS: tuple[str, ...] = (
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
)
#: Splits of a task; each draws from its own random stream (codes in this order, so adding one never changes another).
SPLITS: tuple[str, ...] = ("train", "prior", "trap", "rl", "val")
_SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class TaskConfig:
    """Knobs of the task. Defaults are the tuned recipe (``docs/synthetic.md`` lists what else was tried)."""

    n_notes: int = 6  #: K, notes per melody (= reasoning steps)
    prior: float = 0.95  #: p, probability that a training note follows the melody's step
    steps: tuple[int, ...] = (-2, -1, 1, 2)  #: melody steps in scale degrees
    trap_tail: int = 2  #: trap items break the pattern on their last ``trap_tail`` notes
    clip_seconds: int = (
        1  #: clip length; also the feature extractor's chunk length (100 mel frames per second)
    )
    sampling_rate: int = 16000
    snr_db: tuple[float, float] = (-5.0, 10.0)  #: white-noise SNR, drawn uniformly per clip
    detune_cents: float = 30.0  #: each tone is detuned uniformly within ± this many cents
    harmonic2: tuple[float, float] = (0.0, 0.5)  #: relative amplitude of the 2nd harmonic, drawn per tone
    ramp_seconds: float = 0.005  #: raised-cosine on/off ramps (no clicks between tones)

    def __post_init__(self) -> None:
        if not 2 <= self.n_notes <= len(ORDINALS):
            raise ValueError(f"n_notes must be in [2, {len(ORDINALS)}], got {self.n_notes}")
        if not 0.0 <= self.prior <= 1.0:
            raise ValueError(f"prior (p) must be a probability in [0, 1], got {self.prior}")
        if not 1 <= self.trap_tail < self.n_notes - 1:
            raise ValueError(
                f"trap_tail must be in [1, n_notes - 2] so the pattern is visible first; got {self.trap_tail} "
                f"with n_notes={self.n_notes}"
            )
        if not self.steps or any(s % len(NOTE_NAMES) == 0 for s in self.steps):
            raise ValueError(
                f"steps must be non-empty and not multiples of {len(NOTE_NAMES)}, got {self.steps}"
            )
        if not isinstance(self.clip_seconds, int) or self.clip_seconds < 1:
            raise ValueError(
                f"clip_seconds must be a positive int (Whisper's chunk length), got {self.clip_seconds}"
            )
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be (low, high) with low <= high, got {self.snr_db}")


@dataclass
class SyntheticTask:
    """The splits of one task instance (lists of row dicts, see :func:`make_task`)."""

    config: TaskConfig
    seed: int
    train: list[dict[str, Any]] = field(default_factory=list)
    prior: list[dict[str, Any]] = field(default_factory=list)
    trap: list[dict[str, Any]] = field(default_factory=list)
    rl: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)

    def split(self, name: str) -> list[dict[str, Any]]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


# ----------------------------------------------------------------------------------------------------------------
# Melodies and clips
# ----------------------------------------------------------------------------------------------------------------


def sample_melody(rng: np.random.Generator, config: TaskConfig, trap: bool = False) -> tuple[list[int], int]:
    """Scale-degree indices of one melody and its step ``s`` (see the module docstring for the two regimes)."""
    n_scale = len(NOTE_NAMES)
    step = int(rng.choice(config.steps))
    notes = [int(rng.integers(n_scale))]
    last_clean = (
        config.n_notes - config.trap_tail - 1
    )  # index of the last note that follows the pattern (trap)
    for k in range(1, config.n_notes):
        pattern = (notes[-1] + step) % n_scale
        if trap and k > last_clean:
            forbidden = {pattern, (notes[last_clean] + (k - last_clean) * step) % n_scale}
        elif trap or rng.random() < config.prior:
            notes.append(pattern)
            continue
        else:
            forbidden = {pattern}
        allowed = [n for n in range(n_scale) if n not in forbidden]
        notes.append(int(allowed[rng.integers(len(allowed))]))
    return notes, step


def synthesize_clip(notes: Sequence[int], rng: np.random.Generator, config: TaskConfig) -> np.ndarray:
    """A float32 waveform ``[clip_seconds · sampling_rate]``: one detuned tone (+ 2nd harmonic) per segment + noise."""
    sr = config.sampling_rate
    n_samples = config.clip_seconds * sr
    seg = n_samples // len(notes)
    t = np.arange(seg) / sr
    ramp = max(1, int(config.ramp_seconds * sr))
    envelope = np.ones(seg)
    envelope[:ramp] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[-ramp:] = envelope[:ramp][::-1]
    wave = np.zeros(n_samples)
    for i, note in enumerate(notes):
        freq = NOTE_FREQS_HZ[note] * 2.0 ** (rng.uniform(-config.detune_cents, config.detune_cents) / 1200.0)
        h2 = rng.uniform(*config.harmonic2)
        phase = rng.uniform(0, 2 * np.pi, size=2)
        tone = np.sin(2 * np.pi * freq * t + phase[0]) + h2 * np.sin(4 * np.pi * freq * t + phase[1])
        wave[i * seg : (i + 1) * seg] = envelope * tone
    rms = np.sqrt(np.mean(wave**2))
    snr = rng.uniform(*config.snr_db)
    wave = wave + rng.standard_normal(n_samples) * rms / 10.0 ** (snr / 20.0)
    wave *= rng.uniform(0.3, 0.9) / np.max(np.abs(wave))  # random level, never clipping
    return wave.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Text: question, completion, corpus, labels
# ----------------------------------------------------------------------------------------------------------------


def question_text() -> str:
    """The user text (kept short: the tiny model's context is mostly audio placeholders and the chain)."""
    return f"Which note comes last? Options: {', '.join(NOTE_NAMES)}."


def completion_text(notes: Sequence[str], answer: str | None = None) -> str:
    """The reference completion ``<think> first X1 second X2 …</think><answer>Y</answer>`` (``Y`` = last note)."""
    if len(notes) > len(ORDINALS):
        raise ValueError(f"notes: at most {len(ORDINALS)} notes are supported, got {len(notes)}")
    chain = " ".join(f"{ORDINALS[i]} {n}" for i, n in enumerate(notes))
    answer = notes[-1] if answer is None else answer
    return f"<think> {chain}</think><answer>{answer}</answer>"


def task_corpus(config: TaskConfig | None = None, n: int = 400, seed: int = 0) -> list[str]:
    """Strings to train the task tokenizer on: chat-template text, the question, and reference completions."""
    config = config or TaskConfig()
    rng = np.random.default_rng(seed)
    lines = ["user\n", "assistant\n", question_text()] * n  # as frequent as the chain words: one token each
    for _ in range(n):
        idx, _ = sample_melody(rng, config)
        full = [NOTE_NAMES[i] for i in idx] + [
            NOTE_NAMES[int(i)] for i in rng.integers(5, size=len(ORDINALS))
        ]
        lines.append(completion_text(full[: len(ORDINALS)]))
    return lines


_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def parse_completion(text: str) -> tuple[list[str], str | None]:
    """Notes written inside ``<think>…</think>`` (in order) and the ``<answer>`` text (``None`` if absent)."""
    think = _THINK_RE.search(text)
    chain = think.group(1) if think else text.split("</think>")[0].replace("<think>", "")
    notes = [w for w in re.findall(r"[A-Za-z]+", chain) if w in NOTE_NAMES]
    answer = _ANSWER_RE.search(text)
    return notes, (answer.group(1).strip() if answer else None)


def note_token_labels(completion_ids: Sequence[int], tokenizer) -> list[int]:
    """Ground-truth relevance label per completion token: 1 = audio-dependent note token, 0 = scaffolding.

    A token is a note token iff it lies strictly between ``<think>`` and ``</think>`` and its text (without the
    ``Ġ`` space marker) is a note name. The ``<answer>`` note is 0: given the chain it is a copy of the last
    note, so the text already written determines it (the paper's Δh is ~0 there too). Works on any generated
    sequence, malformed ones included (no ``<think>`` → no token is inside the chain). Padding ids get 0.

    Returns a list with one label per element of ``completion_ids``.
    """
    think_open = tokenizer.convert_tokens_to_ids("<think>")
    think_close = tokenizer.convert_tokens_to_ids("</think>")
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in completion_ids])
    labels, inside = [], False
    for tok_id, tok in zip(completion_ids, tokens):
        if int(tok_id) == think_open:
            inside = True
            labels.append(0)
        elif int(tok_id) == think_close:
            inside = False
            labels.append(0)
        else:
            labels.append(int(inside and tok is not None and tok.replace("Ġ", "") in NOTE_NAMES))
    return labels


# ----------------------------------------------------------------------------------------------------------------
# Rows and prompts
# ----------------------------------------------------------------------------------------------------------------


def _make_row(
    rng: np.random.Generator, config: TaskConfig, split: str, index: int, trap: bool
) -> dict[str, Any]:
    idx, step = sample_melody(rng, config, trap=trap)
    notes = [NOTE_NAMES[i] for i in idx]
    follows = [False] + [(idx[k] - idx[k - 1]) % 5 == step % 5 for k in range(1, len(idx))]
    return {
        "id": f"{split}-{index:05d}",
        "split": split,
        "trap": trap,
        "audio": synthesize_clip(idx, rng, config),
        "sampling_rate": config.sampling_rate,
        "question": question_text(),
        "choices": list(NOTE_NAMES),
        "answer": notes[-1],
        "notes": notes,
        "step": step,
        "follows_prior": follows,  # per note: equals previous note + step (note 1: False)
        "completion": completion_text(notes),
    }


def make_task(
    seed: int = 0,
    n_train: int = 2000,
    n_eval: int = 200,
    config: TaskConfig | None = None,
    n_rl: int = 0,
    rl_trap_fraction: float = 0.5,
    **overrides: Any,
) -> SyntheticTask:
    """Build the ``train``, ``prior`` (held out, training distribution) and ``trap`` splits.

    Args:
        seed: all randomness (melodies, tones, noise) derives from it; equal seeds give equal arrays.
        n_train: training rows (audio clips used by the warm-up and, later, by RL).
        n_eval: rows in *each* of the ``prior`` and ``trap`` evaluation splits.
        n_rl: rows of an ``rl`` split for outcome-reward RL: a ``rl_trap_fraction`` share of trap items spread evenly
            along the split, the rest from the training distribution; drawn from its own
            random stream, so it never overlaps the evaluation splits. The warm-up never uses it (supervision on
            trap chains cures the collapse trivially, see the feasibility study).
        config: a :class:`TaskConfig`; keyword ``overrides`` (e.g. ``prior=0.95, n_notes=8``) replace its fields.

    Each row is a dict ready for ``datasets.Dataset.from_list``: ``audio`` (float32 ``[clip_seconds·16000]``),
    ``sampling_rate``, ``question``, ``choices`` (list[str]), ``answer`` (the correct option's text), ``split``,
    ``trap`` (bool), ``notes`` (ground truth), ``step``, ``follows_prior`` (per note), ``completion`` (the
    reference chain) and ``id``. :func:`prompt_of` turns a row into the conversational prompt.
    """
    if min(n_train, n_eval, n_rl) < 0:
        raise ValueError(f"n_train, n_eval and n_rl must be >= 0, got {n_train}, {n_eval}, {n_rl}")
    if not 0.0 <= rl_trap_fraction <= 1.0:
        raise ValueError(f"rl_trap_fraction must be in [0, 1], got {rl_trap_fraction}")
    config = config or TaskConfig()
    if overrides:
        config = TaskConfig(**{**config.__dict__, **overrides})
    task = SyntheticTask(config=config, seed=seed)
    for split, n, trap_fraction in (
        ("train", n_train, 0.0),
        ("prior", n_eval, 0.0),
        ("trap", n_eval, 1.0),
        ("rl", n_rl, rl_trap_fraction),
    ):
        task.split(split).extend(make_split(seed, config, split, n, trap_fraction))
    return task


def make_split(
    seed: int, config: TaskConfig, split: str, n: int, trap_fraction: float = 0.0
) -> list[dict[str, Any]]:
    """``n`` rows of ``split`` from its own random stream ``(seed, split)``: a ``trap_fraction`` share of trap
    items spread evenly along the split (so any prefix has about that share), the rest from the training
    distribution. :func:`make_task` builds its splits with it; the warm-up draws its ``val`` split with it
    (held out from every other split, never trained on).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= trap_fraction <= 1.0:
        raise ValueError(f"trap_fraction must be in [0, 1], got {trap_fraction}")
    traps = [False] * n
    for i in np.linspace(0, n, round(n * trap_fraction), endpoint=False).astype(int):
        traps[i] = True
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    return [_make_row(rng, config, split, i, traps[i]) for i in range(n)]


def prompt_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversational prompt of a row: one user turn with the audio part, then the question text."""
    audio = np.asarray(row["audio"], dtype=np.float32)
    return [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": row["question"]}],
        }
    ]
