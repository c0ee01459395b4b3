"""Real benchmark metadata as published, identical options, no-answer instruction items, and `--scorer official`
on hand-derived cases (each expected outcome is worked out in the comment beside it from the published rule)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapo.eval import Prediction, load_benchmark, score_predictions, summarize
from mapo.eval.items import EvalItem
from mapo.eval.official import mmsu_first_letter, official_open_score, string_match

A = "<think>listening…</think><answer>{}</answer>"


def _shared_benchmarks() -> Path | None:
    """``shared/benchmarks`` beside the clone (CI), or beside any folder above it (a worktree)."""
    repo = Path(__file__).resolve().parents[2]
    for base in (repo, *repo.parents):
        if (base.parent / "shared" / "benchmarks").is_dir():
            return base.parent / "shared" / "benchmarks"
    return None


BENCH = _shared_benchmarks()
needs_files = pytest.mark.skipif(
    BENCH is None, reason="the real benchmark metadata (../shared/benchmarks/) is absent"
)


def _score(items, outputs, **kw):
    preds = [Prediction.from_item(it, out) for it, out in zip(items, outputs)]
    return summarize(score_predictions(preds, **kw)), preds


# ---------------------------------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------------------------------


@needs_files
def test_real_mmau_test_mini_all_1000_items_are_scored():
    items = load_benchmark("mmau", str(BENCH / "mmau-test-mini.json"), check_audio=False)
    assert len(items) == 1000 and not [it for it in items if it.invalid]
    counts = {g: sum(1 for it in items if it.group == g) for g in ("sound", "music", "speech")}
    assert counts == {"sound": 333, "music": 334, "speech": 333}
    # Score every item with its own gold answer: all 1000 count, speech over 333 items (was 318).
    summary, preds = _score(items, [A.format(it.answer) for it in items])
    mmau = summary["mmau"]
    assert mmau["overall"]["n_scored"] == 1000 and mmau["overall"]["accuracy"] == 1.0
    assert mmau["groups"]["speech"]["n_scored"] == 333 and not mmau["unscored"]


@needs_files
def test_real_mmau_item_with_the_correct_option_listed_twice():
    rows = json.loads((BENCH / "mmau-test-mini.json").read_text())
    dup = [r for r in rows if r["choices"].count(r["answer"]) > 1]
    assert len(dup) == 16  # the published file's items whose correct option appears twice
    item = next(
        it
        for it in load_benchmark("mmau", str(BENCH / "mmau-test-mini.json"), check_audio=False)
        if it.choices == ["thirteen", "twenty", "thirteen", "five"]
    )
    assert item.answer == "thirteen" and not item.invalid
    outputs = ["thirteen", "A", "(C) thirteen", "C", "B", "twenty"]
    _, preds = _score([item] * len(outputs), [A.format(o) for o in outputs])
    assert [p.score for p in preds] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # A and C are the same answer
    _, preds = _score([item], [A.format("I heard thirteen")], answer_match="contains")
    assert preds[0].score == 1.0


@needs_files
def test_real_mmar_meta_jsonl_all_valid():
    items = load_benchmark("mmar", str(BENCH / "MMAR-meta.jsonl"), check_audio=False)
    assert len(items) == 1000 and not [it for it in items if it.invalid]
    # Table 2 columns from `modality`; the four mixes (218 + 82 + 24 + 11) count in Overall only.
    counts = {g: sum(1 for it in items if it.group == g) for g in ("sound", "music", "speech", None)}
    assert counts == {"sound": 165, "music": 206, "speech": 294, None: 335}


# ---------------------------------------------------------------------------------------------------------------
# Instruction following without a final answer
# ---------------------------------------------------------------------------------------------------------------


def _aif(tid, kwargs):
    return EvalItem(
        "if1",
        "mmau-pro",
        "instruction following",
        "instruction",
        ["a.wav"],
        "Describe it.",
        meta={"task_identifier": tid, "kwargs": kwargs},
    )


@pytest.mark.parametrize(
    "tid,kwargs",
    [
        ("No Commas", {}),
        ("Number Words (at most)", {"N": 30}),
        ("Forbidden Words", {"forbidden_words": ["dog"]}),
    ],
)
def test_instruction_item_without_a_final_answer_scores_zero(tid, kwargs):
    item = _aif(tid, kwargs)
    # An unclosed <think>: no final answer. On "" these negative constraints would pass.
    _, preds = _score(
        [item, item], ["<think>I keep thinking and never stop", "<think>ok</think>A bell rings."]
    )
    assert [p.score for p in preds] == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------------------------
# --scorer official
# ---------------------------------------------------------------------------------------------------------------

VOICE = ["Man", "Woman", "Child", "Robot"]
GUITAR = ["acoustic guitar", "electric guitar", "piano", "drums"]
SAME_WORDS = ["dog barking", "barking dog", "cat meowing", "bird singing"]


@pytest.mark.parametrize(
    "answer,prediction,choices,expected",
    [
        ("Man", "man", VOICE, True),  # {man} ⊆ {man}; no other option's word
        (
            "Man",
            "It is a man.",
            VOICE,
            True,
        ),  # extra words pass: {man} ⊆ {it,is,a,man}, none of woman/child/robot
        ("Man", "a man or a woman", VOICE, False),  # "woman" is a word of another option
        ("Man", "B", VOICE, False),  # letters are not read: {b} lacks "man"
        ("Man", "A", VOICE, False),  # not even the right letter (strict: correct)
        ("Man", "", VOICE, False),  # empty prediction
        ("acoustic guitar", "guitar, acoustic", GUITAR, True),  # word sets, order ignored; "guitar" is shared
        ("acoustic guitar", "guitar", GUITAR, False),  # "acoustic" missing
        ("acoustic guitar", "acoustic guitar, maybe acoustic", GUITAR, True),  # a hedge in the answer's words
        (
            "electric guitar",
            "an electric guitar, not a piano",
            GUITAR,
            False,
        ),  # "piano" belongs to another option
        (
            "dog barking",
            "barking dog",
            SAME_WORDS,
            True,
        ),  # an option with the same words is not "another" option
    ],
)
def test_string_match_hand_derived(answer, prediction, choices, expected):
    assert string_match(answer, prediction, choices) is expected


MMSU = ["A cake.", "Chocolate.", "A fruit basket.", "A drink."]  # gold "Chocolate." = B


@pytest.mark.parametrize(
    "prediction,expected",
    [
        ("B", 1),
        ("B. Chocolate.", 1),
        ("Chocolate.", 2),
        ("A cake.", 0),
        ("The answer is B", None),
        ("b", None),
        ("E", None),
        ("", None),
    ],
)
def test_mmsu_first_character_hand_derived(prediction, expected):
    # "Chocolate." reads as letter C (index 2); "The answer is B" starts with T: unparseable.
    assert mmsu_first_letter(prediction, len(MMSU)) == expected


def _choice(bench, choices, answer, i=0):
    group = {"mmau": "sound", "mmar": "music", "mmsu": "reasoning", "mmau-pro": "closed"}[bench]
    return EvalItem(f"{bench}-{i}", bench, group, "choice", ["a.wav"], "Q?", list(choices), answer)


def test_official_scorer_per_benchmark_and_denominators():
    # MMSU: 4 outputs -> B right, "Chocolate." read as C (wrong), "The answer is B" dropped, "A drink." wrong:
    # 1 correct over 3 scored (the dropped one leaves the denominator).
    items = [_choice("mmsu", MMSU, "Chocolate.", i) for i in range(4)]
    outs = [A.format(o) for o in ("B", "Chocolate.", "The answer is B", "A drink.")]
    summary, preds = _score(items, outs, scorer="official")
    assert [p.score for p in preds] == [1.0, 0.0, None, 0.0]
    assert summary["mmsu"]["overall"]["accuracy"] == pytest.approx(1 / 3)
    assert summary["mmsu"]["unscored"] == {"official MMSU": 1}
    # The strict scorer on the same outputs: B, Chocolate. and "The answer is B" (label stripped) -> 3 / 4.
    summary, _ = _score(items, outs)
    assert summary["mmsu"]["overall"]["accuracy"] == 0.75
    # MMAU / MMAR: string_match on the final answer; a completion without a final answer is an empty prediction.
    items = [_choice("mmau", VOICE, "Man", i) for i in range(3)] + [_choice("mmar", GUITAR, "piano", 9)]
    outs = [A.format("It is a man."), "<think>unfinished", A.format("man"), A.format("a piano")]
    _, preds = _score(items, outs, scorer="official")
    assert [p.score for p in preds] == [1.0, 0.0, 1.0, 1.0]
    _, strict = _score(items, outs)
    assert [p.score for p in strict] == [0.0, 0.0, 1.0, 0.0]
    # MMAU-Pro closed: a clear-cut option is scored; anything else would need the embedding model.
    items = [_choice("mmau-pro", ["violin", "piano"], "piano", i) for i in range(2)]
    _, preds = _score(items, [A.format("piano"), A.format("I think it is the piano")], scorer="official")
    assert preds[0].score == 1.0 and preds[1].score is None and "NV-Embed-v2" in preds[1].reason


def test_official_open_score_hand_derived():
    # OVERALL 3 is replaced by the criteria mean (4 + 5 + 2 + 5) / 4 = 4 -> 0.8
    grades = {"correctness": 4, "relevance": 5, "completeness": 2, "clarity": 5, "overall": 3}
    assert official_open_score({"overall": 3, "grades": grades}) == pytest.approx(0.8)
    # missing criteria count 3: (5 + 3 + 3 + 3) / 4 = 3.5 -> 0.7
    assert official_open_score({"grades": {"correctness": 5, "overall": 3}}) == pytest.approx(0.7)
    assert official_open_score({"overall": 4.5, "grades": {**grades, "overall": 4.5}}) == pytest.approx(0.9)
    # the same stored grades through score_predictions
    item = EvalItem("o1", "mmau-pro", "open", "open", ["a.wav"], "What happens?", None, "A bell rings.")
    pred = Prediction.from_item(item, A.format("A bell."))
    pred.judge = {"overall": 3.0, "grades": grades}
    (strict,) = score_predictions([pred])
    assert strict.score == pytest.approx(0.6)
    (official,) = score_predictions([pred], scorer="official")
    assert official.score == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------------------------
# Hub parquet releases with embedded audio ({"bytes", "path"}, the datasets.Audio layout)
# ---------------------------------------------------------------------------------------------------------------


def _wav(seconds, sr=16000):
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(np.arange(int(seconds * sr)) / 7)).astype("float32"), sr, format="WAV")
    return buf.getvalue()


def test_mmsu_and_mmau_pro_parquet_with_embedded_audio(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mapo.data.clips import ClipReader

    meta = {"info": {"features": {"audio": {"_type": "Audio"}}}}
    mmsu = [
        {
            "id": "code_switch_1",
            "task_name": "code_switch_question_answering",
            "audio": {"bytes": _wav(0.5), "path": "code_switch_1.wav"},
            "question": "What did the speaker receive?",
            "choice_a": "A cake.",
            "choice_b": "Chocolate.",
            "choice_c": "A fruit basket.",
            "choice_d": "A drink.",
            "answer_gt": "Chocolate.",
            "category": "Reasoning",
            "sub-category": "Linguistics",
            "sub-sub-category": "Semantics",
        },
    ]
    pro = [
        {
            "id": "p1",
            "audio": [{"bytes": _wav(0.25, 22050), "path": "p1.wav"}],
            "question": "Which instrument?",
            "category": "music",
            "choices": ["violin", "piano"],
            "answer": "piano",
            "task_identifier": None,
            "kwargs": None,
        },
    ]
    for name, rows in (("mmsu", mmsu), ("mmau-pro", pro)):
        path = tmp_path / f"{name}.parquet"
        table = pa.Table.from_pylist(rows)
        pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps(meta)}), path)
        (item,) = load_benchmark(name, str(path))  # check_audio on: nothing on disk is needed
        assert (
            not item.invalid and isinstance(item.audio[0], dict) and set(item.audio[0]) == {"bytes", "path"}
        )
        (wave,) = ClipReader(sampling_rate=16000).read(item.audio[0])
        assert wave.shape == (
            (8000,) if name == "mmsu" else (4000,)
        )  # 0.5 s; 0.25 s resampled 22.05 -> 16 kHz
    assert item.group == "closed" and item.choices == ["violin", "piano"]


@needs_files
def test_export_official_files_have_the_keys_the_scripts_read(tmp_path):
    from mapo.eval.official import export_official

    mmau = load_benchmark("mmau", str(BENCH / "mmau-test-mini.json"), check_audio=False, limit=40)
    mmar = load_benchmark("mmar", str(BENCH / "MMAR-meta.jsonl"), check_audio=False, limit=40)
    items = mmau + mmar
    # every third output hedges with the first wrong option; every fifth has no final answer
    outs = []
    for i, it in enumerate(items):
        wrong = next(c for c in it.choices if c != it.answer)
        outs.append(
            "<think>" if i % 5 == 0 else A.format(f"{it.answer} or {wrong}" if i % 3 == 0 else it.answer)
        )
    summary, preds = _score(items, outs, scorer="official")
    paths = export_official(preds, str(tmp_path / "official"))
    keys = {
        "mmau": {"id", "answer", "choices", "task", "difficulty", "sub-category", "model_prediction"},
        "mmar": {"id", "answer", "choices", "modality", "category", "sub-category", "model_prediction"},
    }
    for bench, path in paths.items():
        rows = json.loads(Path(path).read_text())
        assert len(rows) == 40 and all(keys[bench] <= set(r) for r in rows)
        # the official rule applied to the exported file alone gives our official overall
        acc = sum(string_match(r["answer"], r["model_prediction"], r["choices"]) for r in rows) / len(rows)
        assert acc == pytest.approx(summary[bench]["overall"]["accuracy"])
    assert set(paths) == {"mmau", "mmar"}
