"""Training data checked before a model loads: one report of every bad row, --skip_invalid_rows, mapo check-data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from mapo.cli import main as mapo_main
from mapo.data import load_audio_qa
from mapo.data.validate import DataValidationError, RowChecks, processor_min_seconds
from mapo.testing import sine_clip, tiny_omni_processor, tiny_qwen2_audio_processor


def _row(audio, answer="low", i=0, **extra):
    return {
        "audio": audio,
        "question": "Low or high?",
        "choices": ["low", "high"],
        "answer": answer,
        "id": f"r{i}",
        **extra,
    }


def _dataset(tmp_path):
    """Six good rows, then each fault of the issue's table once (line numbers in comments)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(6):
        sf.write(clips / f"ok{i}.wav", sine_clip(300 + 20 * i, 0.5 + 0.25 * i, sr=8000), 8000)  # resampled
    (clips / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))  # random bytes
    sf.write(clips / "tiny.wav", sine_clip(300, 0.01), 16000)  # 10 ms: no audio token
    sf.write(clips / "long.wav", sine_clip(300, 31.0, sr=8000), 8000)  # beyond the family's 30 s
    lines = [json.dumps(_row(f"clips/ok{i}.wav", i=i)) for i in range(6)]  # lines 1-6
    lines += [
        json.dumps(_row("clips/missing.wav", i=7)),  # 7
        json.dumps(_row("clips/corrupt.wav", i=8)),  # 8
        json.dumps(_row("clips/tiny.wav", i=9)),  # 9
        json.dumps(_row("clips/ok0.wav", answer="medium", i=10)),  # 10: answer not among the choices
        '{"audio": "clips/ok1.wav", "question": ',  # 11: not JSON
        json.dumps({"audio": "clips/ok1.wav", "question": "q", "choices": ["a", "b"], "id": "r12"}),  # 12
        json.dumps(_row("clips/long.wav", i=13)),  # 13
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


CHECKS = RowChecks(sampling_rate=16000, min_seconds=0.03, max_seconds=30.0, long_audio="error")


def test_one_report_lists_every_bad_row_with_file_line_id_and_reason(tmp_path):
    path = _dataset(tmp_path)
    with pytest.raises(DataValidationError) as info:
        load_audio_qa(str(path), checks=CHECKS)
    report = info.value.report
    assert report.rows == 13 and len(report.problems) == 7
    found = {(p.line, p.row_id): p.reason for p in report.problems}
    assert set(found) == {(7, "r7"), (8, "r8"), (9, "r9"), (10, "r10"), (11, "?"), (12, "r12"), (13, "r13")}
    assert "file not found" in found[(7, "r7")]
    assert "not decodable audio" in found[(8, "r8")]
    assert "10.0 ms is too short" in found[(9, "r9")]
    assert "answer='medium' does not designate exactly one of choices=['low', 'high']" in found[(10, "r10")]
    assert "not valid JSON" in found[(11, "?")]
    assert "missing field(s) ['answer']" in found[(12, "r12")]
    assert "31.0 s" in found[(13, "r13")] and "30 s" in found[(13, "r13")]
    message = str(info.value)
    assert message.startswith("7 of 13 training rows are unusable")
    assert f"{path}:8: id=r8: " in message and "--skip_invalid_rows" in message
    # clip-length statistics over the six usable clips: 0.5, 0.75, ..., 1.75 s (resampled from 8 kHz)
    stats = report.stats()
    assert stats["count"] == 6
    assert stats["min"] == pytest.approx(0.5) and stats["max"] == pytest.approx(1.75)
    assert stats["median"] == pytest.approx(np.median([0.5 + 0.25 * i for i in range(6)]))


def test_skip_invalid_rows_trains_on_the_rest_and_logs_the_count(tmp_path, caplog):
    path = _dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mapo.data.qa"):
        ds = load_audio_qa(str(path), checks=CHECKS, skip_invalid=True)
    assert ds["id"] == [f"r{i}" for i in range(6)]
    assert ds["source"][0] == f"{path}:1"
    assert "skipped 7 of 13 training rows" in caplog.text and "training on 6" in caplog.text


def test_long_audio_truncate_keeps_the_long_clip_and_counts_it(tmp_path):
    path = _dataset(tmp_path)
    checks = RowChecks(sampling_rate=16000, min_seconds=0.03, max_seconds=30.0, long_audio="truncate")
    with pytest.raises(DataValidationError) as info:
        load_audio_qa(str(path), checks=checks)
    assert {p.row_id for p in info.value.report.problems} == {"r7", "r8", "r9", "r10", "?", "r12"}
    assert info.value.report.truncated == 1
    assert "1 longer than 30 s (truncated in training)" in info.value.report.stats_line()


@pytest.mark.parametrize("make", [tiny_qwen2_audio_processor, tiny_omni_processor])
def test_processor_minimum_is_the_shortest_clip_with_an_audio_token(make):
    processor = make()
    token = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    seconds = processor_min_seconds(processor, token, 16000)

    # Independent check: the Whisper front-end gives no placeholder below 3 mel frames (20 ms), one from 30 ms.
    def count(ms):
        from mapo.data import audio_prompt

        out = processor.apply_chat_template(
            [audio_prompt(np.full(16 * ms, 0.01, np.float32), "x")],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        return sum(int(t) == token for t in out["input_ids"][0])

    assert count(int(round(seconds * 1000))) >= 1 and count(int(round(seconds * 1000)) - 10) == 0
    assert seconds == pytest.approx(0.03, abs=0.0105)


def test_check_data_command_prints_every_bad_row_and_the_statistics(tmp_path, capsys, monkeypatch):
    path = _dataset(tmp_path)
    code = mapo_main(["check-data", str(path), "--max-seconds", "30"])
    out = capsys.readouterr().out
    assert code == 1
    assert "checked 13 rows in 1 file(s)" in out and "7 unusable row(s)" in out
    for line in (7, 8, 9, 10, 11, 12, 13):
        assert f"{path}:{line}: id=" in out
    assert "clip length (s) of 6 usable rows: min 0.50" in out and "max 1.75" in out
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(path.read_text().splitlines()[:6]) + "\n")
    monkeypatch.chdir(tmp_path)
    assert mapo_main(["check-data", str(good)]) == 0
    assert "all rows usable" in capsys.readouterr().out
