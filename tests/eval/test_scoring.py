"""Scoring of MMAU / MMAR / MMSU / MMAU-Pro in the paper's groupings, on small files in each published format.

The fixtures double as documentation of the formats (docs/eval.md): one record per line of each benchmark's JSON.
Expected accuracies are counted by hand in the comments.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mapo.eval import (
    Prediction,
    check_instruction,
    load_benchmark,
    parse_grades,
    read_predictions,
    score_predictions,
    summarize,
    write_predictions,
)
from mapo.eval.instruction_following import UncheckableInstruction, count_sentences
from mapo.rewards import JudgeReply, accuracy_reward

A = "<think>listening…</think><answer>{}</answer>"


def _write_json(path, rows, jsonl=False):
    with open(path, "w", encoding="utf-8") as fh:
        if jsonl:
            fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
        else:
            json.dump(rows, fh, indent=2)
    return str(path)


def _score(items, outputs, judge=None, **kw):
    assert len(items) == len(outputs)
    preds = [Prediction.from_item(it, out) for it, out in zip(items, outputs)]
    return summarize(score_predictions(preds, judge, **kw)), preds


def _acc(cell):
    return None if cell["accuracy"] is None else round(100 * cell["accuracy"], 4)


# ---------------------------------------------------------------------------------------------------------------
# MMAU test-mini: group = task
# ---------------------------------------------------------------------------------------------------------------


def mmau_rows():
    def row(i, task, choices, answer):
        return {
            "id": f"mmau-{i}",
            "audio_id": f"./test-mini-audios/mmau-{i}.wav",
            "question": "Based on the given audio, identify the source.",
            "choices": choices,
            "answer": answer,
            "dataset": "AudioSet",
            "task": task,
            "split": "test-mini",
            "category": "Reasoning",
            "sub-category": "Acoustic Source Inference",
            "difficulty": "easy" if i % 2 else "hard",
        }

    opts = ["Man", "Woman", "Child", "Robot"]
    return [
        row(0, "sound", opts, "Man"),
        row(1, "sound", opts, "Woman"),
        row(2, "music", ["Violin", "Piano", "Flute"], "Piano"),
        row(3, "music", ["Violin", "Piano", "Flute"], "Violin"),
        row(4, "speech", ["happy", "sad"], "sad"),
        row(5, "speech", ["happy", "sad"], "happy"),
    ]


def test_mmau_groups_by_task(tmp_path):
    items = load_benchmark(
        "mmau", _write_json(tmp_path / "mmau-test-mini.json", mmau_rows()), check_audio=False
    )
    assert [it.group for it in items] == ["sound", "sound", "music", "music", "speech", "speech"]
    assert items[0].audio[0] == str(tmp_path / "test-mini-audios" / "mmau-0.wav")
    outputs = [
        A.format("Man"),  # sound ✓
        A.format("Robot"),  # sound ✗
        A.format("B"),  # music ✓ (letter of "Piano")
        "<think>hmm</think>(A) Violin",  # music ✓ (marked letter + its text after </think>)
        "<think>it sounds sad but the reasoning never closes",  # speech ✗ (no final answer)
        A.format("happy or sad"),  # speech ✗ (hedge)
    ]
    summary, preds = _score(items, outputs)
    res = summary["mmau"]
    assert {g: _acc(c) for g, c in res["groups"].items()} == {"sound": 50.0, "music": 100.0, "speech": 0.0}
    assert _acc(res["overall"]) == 50.0 and res["overall"]["n_scored"] == 6
    assert _acc(res["breakdowns"]["difficulty"]["easy"]) == pytest.approx(
        100 / 3, abs=1e-3
    )  # ids 1, 3, 5: ✗ ✓ ✗
    assert preds[4].extracted is None and preds[2].extracted == "B"
    # The same rules as the accuracy reward, item by item.
    expected = [
        accuracy_reward([o], answer=[it.answer], choices=[it.choices])[0] for it, o in zip(items, outputs)
    ]
    assert [p.score for p in preds] == expected


def test_answer_match_contains_is_forwarded(tmp_path):
    items = load_benchmark("mmau", _write_json(tmp_path / "m.json", mmau_rows()[:1]), check_audio=False)
    assert _score(items, [A.format("It is a man")])[0]["mmau"]["overall"]["accuracy"] == 0.0
    assert (
        _score(items, [A.format("It is a man")], answer_match="contains")[0]["mmau"]["overall"]["accuracy"]
        == 1.0
    )


# ---------------------------------------------------------------------------------------------------------------
# MMAR: group = modality; mixes count in Overall only
# ---------------------------------------------------------------------------------------------------------------


def test_mmar_mixed_modalities_count_in_overall_only(tmp_path):
    def row(i, modality, answer):
        return {
            "id": str(i),
            "audio_path": f"./audio/{i}.wav",
            "question": "Which one?",
            "choices": ["dog barking", "car horn", "piano"],
            "answer": answer,
            "modality": modality,
            "category": "Perception Layer",
            "sub-category": "Sound Recognition",
            "language": "en",
            "source": "web",
            "url": "https://example.org",
            "timestamp": "00:01-00:05",
        }

    rows = [
        row(0, "sound", "dog barking"),
        row(1, "music", "piano"),
        row(2, "speech", "car horn"),
        row(3, "mix-sound-speech", "car horn"),
    ]
    items = load_benchmark("mmar", _write_json(tmp_path / "MMAR-meta.json", rows), check_audio=False)
    # sound ✓ (case and final period ignored), music ✗, speech ✓ (markdown stripped), mix ✓
    outputs = [A.format("Dog barking."), A.format("car horn"), A.format("**Car horn**"), A.format("car horn")]
    res = _score(items, outputs)[0]["mmar"]
    assert {g: _acc(c) for g, c in res["groups"].items()} == {"sound": 100.0, "music": 0.0, "speech": 100.0}
    assert _acc(res["overall"]) == 75.0  # 3 of 4, the mix item included
    assert res["n_overall_only"] == 1
    assert _acc(res["breakdowns"]["modality"]["mix-sound-speech"]) == 100.0


# ---------------------------------------------------------------------------------------------------------------
# MMSU: JSONL, choice_a..choice_d, answer_gt, group = category (case-insensitive)
# ---------------------------------------------------------------------------------------------------------------


def test_mmsu_perception_reasoning_and_invalid_items(tmp_path):
    def row(i, category, answer_gt, choices=("A cake.", "Chocolate.", "A fruit basket.", "A drink.")):
        return {
            "id": f"code_switch_question_answering_{i}",
            "task_name": "code_switch_question_answering",
            "audio_path": f"/audio/q{i}.wav",
            "question": "What did the speaker receive from their friend?",
            **{f"choice_{c}": t for c, t in zip("abcd", choices)},
            "answer_gt": answer_gt,
            "category": category,
            "sub-category": "Linguistics",
            "sub-sub-category": "Semantics",
            "linguistics_sub_discipline": "Semantics",
        }

    rows = [
        row(0, "Perception", "Chocolate."),
        row(1, "perception", "A drink."),
        row(2, "Reasoning", "A cake."),
        row(3, "Reasoning", "Flowers."),
    ]  # answer_gt names no option → unscored, not 0
    path = _write_json(tmp_path / "mmsu.jsonl", rows, jsonl=True)
    items = load_benchmark("mmsu", path, audio_root=str(tmp_path / "data"), check_audio=False)
    assert items[0].audio[0] == str(
        tmp_path / "data" / "audio" / "q0.wav"
    )  # leading "/" is relative to the root
    assert items[3].invalid
    outputs = [A.format("Chocolate"), A.format("A"), A.format("a cake"), A.format("Flowers.")]
    res = _score(items, outputs)[0]["mmsu"]
    assert {g: _acc(c) for g, c in res["groups"].items()} == {"perception": 50.0, "reasoning": 100.0}
    assert _acc(res["overall"]) == pytest.approx(200 / 3, abs=1e-3)  # 2 of 3 scored
    assert res["overall"]["n_items"] == 4 and res["unscored"] == {"invalid item": 1}


# ---------------------------------------------------------------------------------------------------------------
# MMAU-Pro: instruction following / closed / open
# ---------------------------------------------------------------------------------------------------------------


class FakeJudge:
    """A JudgeClient stand-in: replies with fixed grades, records the prompts."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def request_many(self, prompts):
        self.prompts.extend(prompts)
        return [JudgeReply(r, None if r is not None else "down", 1) for r in self.replies[: len(prompts)]]


def mmau_pro_rows():
    base = {
        "audio_path": ["./data/clip.wav"],
        "perceptual_skills": [],
        "reasoning_skills": [],
        "sub-cat": None,
    }
    return [
        {
            **base,
            "id": "c0",
            "category": "sound",
            "question": "What is heard?",
            "choices": ["rain", "wind"],
            "answer": "rain",
            "task_identifier": None,
            "kwargs": None,
        },
        {
            **base,
            "id": "c1",
            "category": "music",
            "question": "Tempo?",
            "choices": ["fast", "slow"],
            "answer": "slow",
            "task_identifier": None,
            "kwargs": None,
        },
        {
            **base,
            "id": "i0",
            "category": "instruction following",
            "question": "Describe the audio in at least 3 words.",
            "choices": None,
            "answer": None,
            "task_identifier": "Number Words (at least)",
            "kwargs": {"N": 3},
        },
        {
            **base,
            "id": "i1",
            "category": "instruction following",
            "question": "Describe it in lowercase.",
            "choices": None,
            "answer": None,
            "task_identifier": "All Lowercase",
            "kwargs": {},
        },
        {
            **base,
            "id": "i2",
            "category": "instruction following",
            "question": "Sing.",
            "choices": None,
            "answer": None,
            "task_identifier": "Rhyme Scheme",
            "kwargs": {},
        },
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
        {
            **base,
            "id": "o1",
            "category": "open",
            "question": "Who speaks?",
            "choices": None,
            "answer": "A child.",
            "task_identifier": None,
            "kwargs": None,
        },
    ]


MMAU_PRO_OUTPUTS = [
    A.format("rain"),  # closed ✓
    A.format("fast"),  # closed ✗
    A.format("a dog barks twice"),  # IF words >= 3 ✓
    A.format("A Dog Barks"),  # IF lowercase ✗
    A.format("la la la"),  # IF unknown identifier → unscored
    A.format("Someone slams a door."),  # open: judge grade 4 → 0.8
    A.format("A kid."),  # open: judge grade 5 → 1.0
]


def test_mmau_pro_groups_with_and_without_judge(tmp_path):
    items = load_benchmark(
        "mmau-pro", _write_json(tmp_path / "mmau-pro.json", mmau_pro_rows()), check_audio=False
    )
    assert [it.kind for it in items] == ["choice"] * 2 + ["instruction"] * 3 + ["open"] * 2
    # Without a judge, open items are unscored; the overall is over the 4 scored items (2 of 4 correct).
    res = _score(items, MMAU_PRO_OUTPUTS)[0]["mmau-pro"]
    assert {g: _acc(c) for g, c in res["groups"].items()} == {
        "instruction following": 50.0,
        "closed": 50.0,
        "open": None,
    }
    assert _acc(res["overall"]) == 50.0
    assert res["unscored"] == {"uncheckable instruction": 1, "no judge": 2}
    # With a judge: open = (0.8 + 1.0) / 2; overall = (1 + 0 + 1 + 0 + 0.8 + 1.0) / 6 scored items.
    judge = FakeJudge(
        [
            "CORRECTNESS: 4 - ok\nRELEVANCE: 4\nCOMPLETENESS: 4\nCLARITY: 4\nOVERALL: 4 - fine",
            "CORRECTNESS: 5\nRELEVANCE: 5\nCOMPLETENESS: 5\nCLARITY: 5",
        ]
    )  # no OVERALL → mean
    summary, preds = _score(items, MMAU_PRO_OUTPUTS, judge)
    res = summary["mmau-pro"]
    assert _acc(res["groups"]["open"]) == 90.0
    assert _acc(res["overall"]) == pytest.approx(100 * 3.8 / 6, abs=1e-3)
    assert "A door slams." in judge.prompts[0] and "Someone slams a door." in judge.prompts[0]
    assert _acc(res["breakdowns"]["category"]["sound"]) == 100.0
    # Re-scoring the saved file without a judge reuses the stored grades: identical summary.
    path = tmp_path / "preds.jsonl"
    write_predictions(preds, str(path))
    assert summarize(score_predictions(read_predictions(str(path)))) == summary


def test_open_judge_failure_is_unscored_not_zero(tmp_path):
    items = load_benchmark(
        "mmau-pro", _write_json(tmp_path / "p.json", mmau_pro_rows()[5:]), check_audio=False
    )
    judge = FakeJudge([None, "I think it is decent."])  # unreachable; unparsable
    res = _score(items, MMAU_PRO_OUTPUTS[5:], judge)[0]["mmau-pro"]
    assert res["overall"]["n_scored"] == 0 and res["unscored"] == {"judge failed": 2}
    # No final answer: lowest grade without a request.
    judge = FakeJudge([])
    res = _score(items[:1], ["<think>never closed"], judge)[0]["mmau-pro"]
    assert _acc(res["overall"]) == 20.0 and judge.prompts == []


def test_mmau_pro_parquet_with_unified_kwargs(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = mmau_pro_rows()[:4]
    for r in rows:  # parquet unifies struct fields: every row gets every key, absent ones None
        r["kwargs"] = {"N": (r["kwargs"] or {}).get("N"), "keywords": None}
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    items = load_benchmark("mmau-pro", str(path), check_audio=False)
    assert items[2].meta["kwargs"] == {"N": 3} and items[3].meta["kwargs"] == {}
    assert items[0].choices == ["rain", "wind"] and items[0].audio[0].endswith("data/clip.wav")


# ---------------------------------------------------------------------------------------------------------------
# Units: instruction checks, judge parsing, loader errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tid, kwargs, response, ok",
    [
        ("Include Keywords", {"keywords": "rain, thunder"}, "Rain and distant thunder.", True),
        ("Include Keywords", {"keywords": "cat"}, "a category", False),  # whole words only
        ("Keyword Frequency", {"keyword": "bell", "N": 2.0}, "A bell, then another bell.", True),
        ("Forbidden Words", {"forbidden_words": "dog, cat"}, "A bird sings.", True),
        # word lists stored as JSON lists (not only the release's "a, b" strings) are read as lists
        ("Include Keywords", {"keywords": ["rain", "thunder"]}, "Rain and distant thunder.", True),
        ("Include Keywords", {"keywords": ["rain", "thunder"]}, "Rain only.", False),
        ("Forbidden Words", {"forbidden_words": ["dog", "cat"]}, "A dog barks.", False),
        ("Number Paragraphs", {"N": 2}, "One.\n***\nTwo.", True),
        ("Number Words (range)", {"N1": 2, "N2": 3}, "two words", True),
        ("Number Sentences (at most)", {"N": 1}, "One. Two.", False),
        ("Postscript", {"postscript_marker": "P.S."}, "Main text.\nP.S. more", True),
        (
            "Postscript",
            {"postscript_marker": "P.S."},
            "Perhaps so.",
            False,
        ),  # "ps" inside a word is no postscript
        ("Number Bullets", {"N": 2}, "* one\n* two", True),
        ("Title", {}, "<<Rain>> It rains.", True),
        ("Minimum Number Highlighted Section", {"N": 2}, "*one* and **two**", True),
        ("Multiple Sections", {"N": 2, "section_splitter": "SECTION"}, "SECTION 1\na\nSECTION 2\nb", True),
        ("Two Responses", {}, "first ****** second", True),
        ("Two Responses", {}, "same ****** same", False),
        ("All Uppercase", {}, "LOUD NOISE", True),
        ("All-capital Words (at least)", {"N": 2}, "A LOUD BANG", True),
        ("Start Checker", {"start_phrase": "In summary"}, "In summary, rain.", True),
        ("End Checker", {"end_phrase": "Is there anything else?"}, "Rain. Is there anything else?", True),
        ("Quotation", {}, '"A dog."', True),
        ("No Commas", {}, "rain, wind", False),
    ],
)
def test_instruction_checks(tid, kwargs, response, ok):
    assert check_instruction(tid, kwargs, response) is ok


def test_instruction_checks_refuse_to_guess():
    with pytest.raises(UncheckableInstruction, match="unknown task_identifier"):
        check_instruction("Rhyme Scheme", {}, "x")
    with pytest.raises(UncheckableInstruction, match="'N'"):
        check_instruction("Number Words (at least)", {}, "x")
    assert check_instruction("Repeat Prompt", {}, "Describe the sound. It is rain.", "Describe the sound.")
    assert count_sentences("It rains. Then thunder! Done?") == 3


def test_parse_grades():
    assert parse_grades("**CORRECTNESS:** 3\nOVERALL: 4.5 - good")["overall"] == 4.5
    assert parse_grades("CORRECTNESS: 2\nRELEVANCE: 4\nCOMPLETENESS: 3\nCLARITY: 3")["overall"] == 3.0
    assert parse_grades("CORRECTNESS: 2") is None  # no OVERALL and not all criteria: a failure, not a 3
    assert parse_grades("OVERALL: 7") is None


def test_loader_errors_name_the_field(tmp_path):
    bad = mmau_rows()[:1]
    del bad[0]["answer"]
    with pytest.raises(ValueError, match=r"missing field\(s\) \['answer'\]"):
        load_benchmark("mmau", _write_json(tmp_path / "bad.json", bad), check_audio=False)
    with pytest.raises(ValueError, match="benchmark must be one of"):
        load_benchmark("mmlu", _write_json(tmp_path / "x.json", mmau_rows()))
    with pytest.raises(FileNotFoundError, match="--audio-root"):
        load_benchmark("mmau", _write_json(tmp_path / "ok.json", mmau_rows()))


# ---------------------------------------------------------------------------------------------------------------
# End to end: tiny Qwen2-Audio + its processor through `mapo eval`
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_runner_end_to_end_and_rescoring(tmp_path):
    sf = pytest.importorskip("soundfile")
    from mapo.eval.cli import main
    from mapo.testing import sine_clip, tiny_qwen2_audio, tiny_qwen2_audio_processor

    processor = tiny_qwen2_audio_processor()
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer)
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    rows = mmau_rows()[:4]
    (tmp_path / "test-mini-audios").mkdir()
    for i, row in enumerate(rows):
        sf.write(
            tmp_path / row["audio_id"], sine_clip(220.0 * (i + 1), seconds=0.5 + 0.25 * i, seed=i), 16000
        )
    data = _write_json(tmp_path / "mmau-test-mini.json", rows)
    out = tmp_path / "out"
    argv = [
        "--benchmark",
        "mmau",
        "--data",
        data,
        "--model",
        str(model_dir),
        "--batch-size",
        "3",
        "--max-new-tokens",
        "6",
        "--quiet",
        "--dtype",
        "float32",
    ]
    assert main([*argv, "--output-dir", str(out)]) == 0
    preds = read_predictions(str(out / "predictions.jsonl"))
    assert [p.id for p in preds] == [r["id"] for r in rows] and all(p.benchmark == "mmau" for p in preds)
    assert all(isinstance(p.prediction, str) and p.score in (0.0, 1.0) for p in preds)
    direct = json.loads((out / "results.json").read_text())["results"]
    assert direct["mmau"]["overall"]["n_scored"] == 4
    # Re-scoring from the predictions file (no model) gives the same result.
    assert main(["--predictions", str(out / "predictions.jsonl"), "--output-dir", str(tmp_path / "re")]) == 0
    again = json.loads((tmp_path / "re" / "results.json").read_text())["results"]
    assert again == direct
    # Greedy decoding is deterministic: a second generation run gives the same texts.
    assert main([*argv, "--output-dir", str(tmp_path / "o2")]) == 0
    assert [p.prediction for p in read_predictions(str(tmp_path / "o2" / "predictions.jsonl"))] == [
        p.prediction for p in preds
    ]
    assert np.isfinite([p.score for p in preds]).all()


def test_lora_adapter_is_merged(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from mapo.eval.runner import load_model_and_processor
    from mapo.testing import tiny_qwen2_audio, tiny_qwen2_audio_processor

    processor = tiny_qwen2_audio_processor()
    base = tiny_qwen2_audio(tokenizer=processor.tokenizer)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    # --model BASE --adapter DIR, and --model ADAPTER_DIR (base read from adapter_config.json).
    for args in ((str(tmp_path / "base"), str(tmp_path / "adapter")), (str(tmp_path / "adapter"), None)):
        model, proc = load_model_and_processor(*args, processor_path=str(tmp_path / "base"), dtype="float32")
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)
        assert not hasattr(model, "peft_config") and proc.tokenizer.pad_token == "<|endoftext|>"
