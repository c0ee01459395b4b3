"""Real benchmark metadata as published, identical options, no-answer instruction items, and `--scorer official`
on hand-derived cases (each expected outcome is worked out in the comment beside it from the published rule)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapo.eval import Prediction, load_benchmark, score_predictions, summarize
from mapo.eval.items import EvalItem
from mapo.eval.official import (
    mmau_pro_certain_option,
    mmsu_official_score,
    mmsu_read_letter,
    official_instruction,
    official_open_score,
    string_match,
)

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

# mmsu_evaluation.py (dingdongwang/MMSU @ 698fac8): strip, drop newlines; the first character if it is A-D, else
# the second-to-last if it is; "" and "None" stay in the denominator (wrong); anything else is dropped.


@pytest.mark.parametrize(
    "response,letter",
    [
        ("B", "B"),
        ("B. Chocolate.", "B"),
        ("Chocolate.", "C"),  # the first character is read: C
        ("A cake.", "A"),
        ("Definitely B.", "D"),  # first character D
        ("The answer is B.", "B"),  # T is no letter; the second-to-last character is B
        ("The answer is B", None),  # second-to-last is " ": wrong format, dropped
        ("I think (B).", None),  # second-to-last is ")"
        ("answer:\nB.", "B"),  # the newline is removed: "answer:B." -> second-to-last B
        ("  \n B \n", "B"),  # stripped first
        ("b", None),  # lower case is not read; one character, so no second-to-last fallback
        ("E", None),  # only A-D are read
        ("OK", None),
        ("", ""),  # empty: counted wrong, not dropped
        ("   \n", ""),
        ("None", ""),  # the literal "None" is treated as empty
    ],
)
def test_mmsu_read_letter_hand_derived(response, letter):
    assert mmsu_read_letter(response) == letter


def test_mmsu_official_score_compares_option_text_exactly():
    assert mmsu_official_score("B", "Chocolate.", MMSU) == 1.0
    assert mmsu_official_score("Chocolate.", "Chocolate.", MMSU) == 0.0  # read as C
    assert mmsu_official_score("", "Chocolate.", MMSU) == 0.0
    assert mmsu_official_score("The answer is B", "Chocolate.", MMSU) is None
    # exact string comparison: a gold text that differs from the option in case matches nothing
    assert mmsu_official_score("B", "chocolate.", MMSU) == 0.0
    # a letter beyond the item's options reads choice_d = "" (missing): wrong, not dropped
    assert mmsu_official_score("D", "no", ["yes", "no"]) == 0.0
    # a fifth option is never read: "E" is a wrong format even when it is the gold option
    assert mmsu_official_score("E", "five", ["one", "two", "three", "four", "five"]) is None


def _choice(bench, choices, answer, i=0, invalid=""):
    group = {"mmau": "sound", "mmar": "music", "mmsu": "reasoning", "mmau-pro": "closed"}[bench]
    return EvalItem(
        f"{bench}-{i}", bench, group, "choice", ["a.wav"], "Q?", list(choices), answer, invalid=invalid
    )


def test_official_scorer_per_benchmark_and_denominators():
    # MMSU: B right; "Chocolate." read as C (wrong); "The answer is B" dropped; "A drink." wrong; no final
    # answer = "" counted wrong: 1 correct over 4 scored (the dropped one leaves the denominator).
    items = [_choice("mmsu", MMSU, "Chocolate.", i) for i in range(5)]
    outs = [A.format(o) for o in ("B", "Chocolate.", "The answer is B", "A drink.")] + ["<think>unfinished"]
    summary, preds = _score(items, outs, scorer="official")
    assert [p.score for p in preds] == [1.0, 0.0, None, 0.0, 0.0]
    assert summary["mmsu"]["overall"]["accuracy"] == pytest.approx(1 / 4)
    assert summary["mmsu"]["unscored"] == {"official MMSU": 1}
    # The strict scorer on the same outputs: B, Chocolate. and "The answer is B" (label stripped) -> 3 / 5.
    summary, _ = _score(items, outs)
    assert summary["mmsu"]["overall"]["accuracy"] == pytest.approx(3 / 5)
    # MMAU / MMAR: string_match on the final answer; a completion without a final answer is an empty prediction.
    items = [_choice("mmau", VOICE, "Man", i) for i in range(3)] + [_choice("mmar", GUITAR, "piano", 9)]
    outs = [A.format("It is a man."), "<think>unfinished", A.format("man"), A.format("a piano")]
    _, preds = _score(items, outs, scorer="official")
    assert [p.score for p in preds] == [1.0, 0.0, 1.0, 1.0]
    _, strict = _score(items, outs)
    assert [p.score for p in strict] == [0.0, 0.0, 1.0, 0.0]
    # An item the strict scorer leaves unscored as a dataset bug is graded by the official rule, as the script
    # does: the gold "Cat" names no option, string_match still runs.
    bad = _choice("mmau", VOICE, "Cat", 5, invalid="answer does not designate one option")
    _, (official,) = _score([bad], [A.format("cat")], scorer="official")
    (strict,) = score_predictions([Prediction.from_item(bad, A.format("cat"))])
    assert official.score == 1.0 and strict.score is None
    # MMAU-Pro closed: an output whose text is an option's text is certain; a letter or extra words would need
    # the embedding model; a gold text that is no option is wrong whatever the output; < 2 choices: dropped.
    pro = ["violin", "piano"]
    items = [_choice("mmau-pro", pro, "piano", i) for i in range(4)]
    items += [
        _choice("mmau-pro", pro, "guitar", 7, invalid="answer does not designate one option"),
        _choice("mmau-pro", ["piano"], "piano", 8, invalid="fewer than two choices"),
    ]
    outs = ["piano", "Violin.", "I think it is the piano", "B", "piano", "piano"]
    _, preds = _score(items, [A.format(o) for o in outs], scorer="official")
    assert [p.score for p in preds] == [1.0, 0.0, None, None, 0.0, None]
    assert "NV-Embed-v2" in preds[2].reason and "fewer than two" in preds[5].reason


@pytest.mark.parametrize(
    "prediction,choices,expected",
    [
        ("piano", ["violin", "piano"], 1),
        ("PIANO!", ["violin", "piano"], 1),  # case and punctuation only
        ("B", ["violin", "piano"], None),  # a letter is embedded as "B": nearest option unknown
        ("B. piano", ["violin", "piano"], None),
        ("the piano", ["violin", "piano"], None),
        ("", ["violin", "piano"], None),
        ("thirteen", ["thirteen", "twenty", "thirteen"], 0),  # identical options: the same text either way
        ("piano", ["Piano", "piano", "violin"], None),  # two different strings with one key: not certain
    ],
)
def test_mmau_pro_certain_option(prediction, choices, expected):
    assert mmau_pro_certain_option(prediction, choices) == expected


# evaluate_mmau_pro_comprehensive.py (sonalkum/MMAUPro @ bf12804), instruction following, on hand-derived cases.
@pytest.mark.parametrize(
    "tid,kwargs,response,question,official",
    [
        # keywords are case-insensitive substrings of the response, split on ", "
        ("Include Keywords", {"keywords": "cat, dog"}, "A category of hotdogs.", "", True),
        ("Include Keywords", {"keywords": ["cat", "dog"]}, "A cat.", "", False),
        ("Forbidden Words", {"forbidden_words": "cat"}, "A category.", "", False),
        ("Forbidden Words", {"forbidden_words": "cat, dog"}, "A bird.", "", True),
        ("Keyword Frequency", {"keyword": "cat", "N": 2}, "Cat, cats and a cat.", "", True),  # whole words
        ("Postscript", {"postscript_marker": "P.S."}, "Perhaps so.", "", True),  # letters "ps" in "perhaps"
        ("No Commas", {}, "", "", True),  # an empty response passes a negative constraint
        ("Number Words (at most)", {"N": 3}, "", "", True),
        ("Number Words (at least)", {}, "", "", True),  # missing N reads as 0
        ("Number Words (range)", {"N1": 2}, "two words", "", True),  # N2 defaults to 999
        ("Number Bullets", {"N": 2}, "* a\n* b", "", True),
        ("Number Bullets", {"N": 2}, "- a\n- b", "", False),  # only "*" bullets count
        ("Minimum Number Highlighted Section", {"N": 2}, "*one* and *two*", "", True),
        ("Number Placeholder", {"N": 1}, "Meet at [place].", "", True),
        ("Title", {}, "<<Rain>> It rains.", "", True),
        ("Number Paragraphs", {"N": 2}, "one *** two ***", "", True),
        # split on the splitter: "", "1 a", "2 b" -> 2 sections; a preamble is a third one
        ("Multiple Sections", {"N": 2, "section_splitter": "SECTION"}, "SECTION 1 a SECTION 2 b", "", True),
        (
            "Multiple Sections",
            {"N": 2, "section_splitter": "SECTION"},
            "Hi. SECTION 1 a SECTION 2 b",
            "",
            False,
        ),
        ("Repeat Prompt", {}, "what is heard? A dog.", "What is heard?", True),
        ("Two Responses", {}, "A dog. ****** a DOG.", "", False),  # the same text up to case
        ("Two Responses", {}, "A dog. ****** A cat.", "", True),
        ("All Lowercase", {}, "a dog barks", "", True),
        ("All-capital Words (at least)", {"N": 2}, "A DOG barks", "", True),  # "A" and "DOG"
        ("Start Checker", {"start_phrase": "Hello world"}, "hello, world! Rain.", "", True),
        ("End Checker", {"end_phrase": "Any questions?"}, "Rain. Any questions", "", True),
        ("Quotation", {}, '"', "", True),  # one quote mark starts and ends the text
        ("Rhyme Scheme", {}, "la la", "", False),  # an unknown identifier fails (not unscored)
    ],
)
def test_official_instruction_hand_derived(tid, kwargs, response, question, official):
    assert official_instruction(tid, kwargs, response, question) is official


def test_official_instruction_scoring_of_items_without_a_final_answer():
    # The strict scorer gives 0 to an item without a final answer; the official script checks the empty text.
    item = _aif("No Commas", {})
    _, (strict,) = _score([item], ["<think>never closed"])
    _, (official,) = _score([item], ["<think>never closed"], scorer="official")
    assert strict.score == 0.0 and official.score == 1.0
    item = _aif("Include Keywords", {"keywords": ["cat"]})
    _, (strict,) = _score([item], [A.format("A category.")])
    _, (official,) = _score([item], [A.format("A category.")], scorer="official")
    assert strict.score == 0.0 and official.score == 1.0  # whole words vs substrings


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


# ---------------------------------------------------------------------------------------------------------------
# --export-official: each file read back the way its official script reads it
# ---------------------------------------------------------------------------------------------------------------
# The readers below are this test's own re-statements of what each script does (docs/eval.md lists the files and
# commits read); they share no code with mapo.eval.official.


def _script_words(text):
    import re

    return set(re.findall(r"\b\w+\b", text.lower()))


def _script_string_match(answer, prediction, choices):
    """MMAU / MMAR evaluation.py: all answer words present, none of another option's own words."""
    pred, gold = _script_words(prediction), _script_words(answer)
    wrong = set().union(*(_script_words(c) - gold for c in choices if _script_words(c) != gold))
    return bool(pred) and gold <= pred and not (pred & wrong)


def _script_mmau_like(rows, key):
    """evaluation.py: rows without the output key are skipped; accuracy over the rest."""
    kept = [r for r in rows if key in r]
    return sum(_script_string_match(r["answer"], r[key], r["choices"]) for r in kept) / len(kept)


@needs_files
def test_export_mmau_and_mmar_files_read_by_their_scripts(tmp_path):
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
    assert Path(paths["mmau"]).name == "mmau-test-mini_predictions.json"
    assert Path(paths["mmar"]).name == "MMAR-meta_predictions.json"
    # the keys each script reads: MMAU's evaluation.py reads model_output (its README still says
    # model_prediction), MMAR's reads model_prediction
    keys = {
        "mmau": ({"answer", "choices", "task", "difficulty", "sub-category"}, "model_output"),
        "mmar": ({"answer", "choices", "modality", "category", "sub-category"}, "model_prediction"),
    }
    for bench, path in paths.items():
        rows = json.loads(Path(path).read_text())
        fields, key = keys[bench]
        assert len(rows) == 40 and all(fields | {key} <= set(r) for r in rows)
        assert _script_mmau_like(rows, key) == pytest.approx(summary[bench]["overall"]["accuracy"])
    assert set(paths) == {"mmau", "mmar"}


MMSU_FIXTURE = [
    # (category, gold letter, final answer or None) -> what mmsu_evaluation.py makes of it
    ("Reasoning", "B", "B"),  # B: correct
    ("Reasoning", "B", "Chocolate."),  # read as C: wrong
    ("Reasoning", "B", "The answer is B"),  # second-to-last is " ": dropped
    ("Reasoning", "B", None),  # no final answer -> "": wrong, counted
    ("Perception", "A", "The answer is A."),  # second-to-last A: correct
    ("Perception", "A", "Definitely A."),  # read as D: wrong
    ("Perception", "A", "A"),  # correct
]


def _script_mmsu(lines):
    """mmsu_evaluation.py: JSONL; response -> letter; counted per `category` and in total."""
    per: dict = {}
    for line in lines:
        rec = json.loads(line)
        text = rec.get("response", "").strip().replace("\n", "")
        letter = None
        if text and text != "None":
            if text[0] in "ABCD":
                letter = text[0]
            elif len(text) > 1 and text[-2] in "ABCD":
                letter = text[-2]
            else:
                continue  # wrong format: not counted
        ok = letter is not None and rec.get(f"choice_{letter.lower()}", "") == rec.get("answer_gt", "")
        cell = per.setdefault(rec.get("category", ""), [0, 0])
        cell[0] += ok
        cell[1] += 1
    total = [sum(c[0] for c in per.values()), sum(c[1] for c in per.values())]
    return {k: c[0] / c[1] for k, c in per.items()}, total[0] / total[1], total[1]


def test_export_mmsu_jsonl_read_by_mmsu_evaluation(tmp_path):
    from mapo.eval.official import export_official

    rows, outs = [], []
    for i, (category, gold, final) in enumerate(MMSU_FIXTURE):
        rows.append(
            {
                "id": f"code_switch_question_answering_{i}",
                "task_name": "code_switch_question_answering",
                "audio_path": f"/audio/{i}.wav",
                "question": "What did the speaker receive from their friend?",
                **{f"choice_{c}": o for c, o in zip("abcd", MMSU)},
                "answer_gt": MMSU["ABCD".index(gold)],
                "category": category,
                "sub-category": "Linguistics",
                "sub-sub-category": "Semantics",
                "linguistics_sub_discipline": "Semantics",
            }
        )
        outs.append("<think>still thinking" if final is None else A.format(final))
    path = tmp_path / "mmsu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_benchmark("mmsu", str(path), check_audio=False)
    summary, preds = _score(items, outs, scorer="official")
    out = export_official(preds, str(tmp_path / "official"))["mmsu"]
    assert Path(out).name == "mmsu_predictions.jsonl"
    lines = Path(out).read_text().splitlines()
    read = [json.loads(line) for line in lines]
    # the keys mmsu_evaluation.py reads, and the rest of what mmsu_inference.py writes
    script_keys = {
        "response",
        "answer_gt",
        "choice_a",
        "choice_b",
        "choice_c",
        "choice_d",
        "category",
        "sub-category",
    }
    assert all(script_keys | {"id", "question", "task_name", "sub-sub-category"} <= set(r) for r in read)
    assert [r["response"] for r in read] == [f or "" for _, _, f in MMSU_FIXTURE]
    per_category, overall, counted = _script_mmsu(lines)
    # hand-derived: Reasoning 1 of 3 counted (one dropped), Perception 2 of 3; overall 3 of 6
    assert counted == 6 and overall == pytest.approx(0.5)
    assert per_category == pytest.approx({"Reasoning": 1 / 3, "Perception": 2 / 3})
    mmsu = summary["mmsu"]
    assert mmsu["overall"]["accuracy"] == pytest.approx(overall) and mmsu["overall"]["n_scored"] == counted
    assert mmsu["groups"]["reasoning"]["accuracy"] == pytest.approx(per_category["Reasoning"])
    assert mmsu["groups"]["perception"]["accuracy"] == pytest.approx(per_category["Perception"])


def _pro_rows():
    base = {"audio_path": ["./data/clip.wav"], "perceptual_skills": [], "reasoning_skills": []}

    def closed(i, category, choices, answer):
        return {
            **base,
            "id": f"c{i}",
            "category": category,
            "question": "Which?",
            "choices": choices,
            "answer": answer,
            "task_identifier": None,
            "kwargs": None,
        }

    def aif(i, tid, kwargs, question="Describe the audio."):
        return {
            **base,
            "id": f"i{i}",
            "category": "instruction following",
            "question": question,
            "choices": None,
            "answer": None,
            "task_identifier": tid,
            "kwargs": kwargs,
        }

    return [
        closed(0, "sound", ["rain", "wind", "fire"], "rain"),
        closed(1, "sound", ["rain", "wind", "fire"], "wind"),
        closed(2, "music", ["fast", "slow"], "slow"),
        closed(3, "music", ["fast"], "fast"),  # one choice: dropped by the script
        aif(
            0, "Include Keywords", {"keywords": ["rain", "roof"]}
        ),  # a list here; the release has "rain, roof"
        aif(1, "No Commas", {}),
        aif(2, "Number Words (at most)", {"N": 3}),
        aif(3, "Forbidden Words", {"forbidden_words": "cat"}),
        {
            **base,
            "id": "o0",
            "category": "open",
            "question": "What happens?",
            "choices": None,
            "answer": "A door slams.",
            "task_identifier": None,
            "kwargs": None,
        },
    ]


PRO_OUTPUTS = [
    A.format("Rain"),  # c0: the option's text: rain (correct)
    A.format("fire."),  # c1: fire (wrong)
    A.format("slow"),  # c2: correct
    A.format("fast"),  # c3: dropped (one choice)
    A.format("Rain drums on the roofs."),  # i0: substrings "rain" and "roof": pass
    "<think>never closed",  # i1: empty response: no commas: pass
    A.format("Rain, wind, fire, and more."),  # i2: 5 words > 3: fail
    A.format("A category of sounds."),  # i3: "cat" is a substring of "category": fail
    A.format("A door closes loudly."),  # o0: needs the judge
]


def _script_mmau_pro(df, nearest):
    """evaluate_mmau_pro_comprehensive.py on a DataFrame, with `nearest` standing in for NV-Embed-v2: closed items
    with > 1 choice, matched option == answer; instruction following by the script's checks (those used here)."""
    closed = df[~df["category"].isin(["open", "instruction following"])]
    closed = closed[closed["choices"].notna()]
    closed = closed[closed["choices"].apply(lambda x: len(x) > 1)]
    hits = [
        nearest(out, list(ch)) == ans
        for out, ch, ans in zip(closed["model_output"].fillna(""), closed["choices"], closed["answer"])
    ]
    aif = []
    for _, row in df[df["category"] == "instruction following"].iterrows():
        text, kw, tid = str(row["model_output"]), row["kwargs"] or {}, row["task_identifier"]
        if tid == "Include Keywords":
            aif.append(all(w.lower() in text.lower() for w in kw.get("keywords", "").split(", ")))
        elif tid == "Forbidden Words":
            aif.append(not any(w.lower() in text.lower() for w in kw.get("forbidden_words", "").split(", ")))
        elif tid == "No Commas":
            aif.append("," not in text)
        elif tid == "Number Words (at most)":
            aif.append(len(text.split()) <= kw.get("N", 0))
    return hits, aif, df[df["category"] == "open"]


def test_export_mmau_pro_parquet_read_by_its_script(tmp_path):
    pd = pytest.importorskip("pandas")
    from mapo.eval.official import export_official

    path = tmp_path / "mmau-pro.json"
    path.write_text(json.dumps(_pro_rows()))
    items = load_benchmark("mmau-pro", str(path), check_audio=False)
    summary, preds = _score(items, PRO_OUTPUTS, scorer="official")
    out = export_official(preds, str(tmp_path / "official"))["mmau-pro"]
    assert Path(out).name == "mmau-pro_predictions.parquet"
    df = pd.read_parquet(out)  # as the script reads it
    assert {"category", "question", "answer", "choices", "task_identifier", "kwargs", "model_output"} <= set(
        df.columns
    )
    assert len(df) == 9 and list(df["model_output"])[5] == ""
    kw = df.set_index("id")["kwargs"]
    # a struct comes back as a dict the script calls .get on; keyword lists are ", "-joined strings
    assert kw["i0"]["keywords"] == "rain, roof" and kw["i2"]["N"] == 3 and kw["c0"] is None

    def nearest(output, choices):
        # only outputs that are an option's text occur in this test, where any embedding picks that option
        (match,) = [c for c in choices if c.lower() == output.lower().strip(".")]
        return match

    hits, aif, open_rows = _script_mmau_pro(df, nearest)
    # hand-derived: closed 2 of 3 (c3 dropped); instruction following: pass, pass, fail, fail
    assert hits == [True, False, True] and aif == [True, True, False, False]
    pro = summary["mmau-pro"]
    assert pro["groups"]["closed"]["accuracy"] == pytest.approx(2 / 3)
    assert pro["groups"]["closed"]["n_scored"] == 3
    assert pro["groups"]["instruction following"]["accuracy"] == pytest.approx(0.5)
    # the open item goes to the script's judge with the question, the reference and the output
    assert list(open_rows["answer"]) == ["A door slams."]
    assert list(open_rows["model_output"]) == ["A door closes loudly."]


def test_export_leaves_out_unreadable_items(tmp_path):
    from mapo.eval.official import export_official

    items = [_choice("mmsu", MMSU, "Chocolate.", i) for i in range(2)]
    preds = [Prediction.from_item(it, A.format("B")) for it in items]
    preds[1].unreadable = "missing file"
    score_predictions(preds, scorer="official")
    out = export_official(preds, str(tmp_path))["mmsu"]
    assert [json.loads(line)["id"] for line in Path(out).read_text().splitlines()] == ["mmsu-0"]
    assert [p.score for p in preds] == [1.0, None]


def test_cli_rescoring_with_the_official_scorer_and_export(tmp_path, capsys):
    from mapo.eval import write_predictions
    from mapo.eval.cli import main

    path = tmp_path / "p.json"
    path.write_text(json.dumps(_pro_rows()))
    items = load_benchmark("mmau-pro", str(path), check_audio=False)
    items += [_choice("mmsu", MMSU, "Chocolate.", i) for i in range(2)]
    preds = [Prediction.from_item(it, out) for it, out in zip(items, [*PRO_OUTPUTS, A.format("B"), "C"])]
    write_predictions(preds, str(tmp_path / "predictions.jsonl"))
    argv = ["--predictions", str(tmp_path / "predictions.jsonl"), "--scorer", "official"]
    argv += ["--export-official", str(tmp_path / "official"), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["scorer"] == "official" and set(results["official_rules"]) == {"mmsu", "mmau-pro"}
    assert "mmsu_evaluation.py" in results["official_rules"]["mmsu"]
    assert results["results"]["mmsu"]["overall"]["accuracy"] == 0.5  # "B" right, "C" wrong
    names = sorted(p.name for p in (tmp_path / "official").iterdir())
    assert names == ["mmau-pro_predictions.parquet", "mmsu_predictions.jsonl"]
    assert "official input file (mmsu)" in capsys.readouterr().out
