"""`mapo eval` never loses finished work: per-batch appends, resume, refusal to overwrite, unreadable clips as
unscored items, the long-audio summary and always-valid JSON. Tiny Qwen2-Audio on CPU (issue rows "eval
interrupted / corrupt clip" and "eval into an existing output dir")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mapo.eval import read_predictions
from mapo.eval.store import OutputExists, write_json

from .test_scoring import _write_json, mmau_rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from mapo.testing import sine_clip, tiny_qwen2_audio, tiny_qwen2_audio_processor

    root = tmp_path_factory.mktemp("run")
    processor = tiny_qwen2_audio_processor()  # keeps 1 s of audio: the long-audio limit of this tiny model
    model = tiny_qwen2_audio(tokenizer=processor.tokenizer)
    model.save_pretrained(root / "tiny")
    processor.save_pretrained(root / "tiny")
    rows = mmau_rows()[:5]
    (root / "test-mini-audios").mkdir()
    for i, row in enumerate(rows):
        sf.write(root / row["audio_id"], sine_clip(220.0 * (i + 1), seconds=0.4 + 0.2 * i, seed=i), 16000)
    # item 2: random bytes instead of a WAV file
    (root / rows[2]["audio_id"]).write_bytes(
        np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes()
    )
    data = _write_json(root / "mmau-test-mini.json", rows)
    argv = ["--benchmark", "mmau", "--data", data, "--model", str(root / "tiny"), "--batch-size", "2"]
    argv += ["--max-new-tokens", "4", "--quiet", "--dtype", "float32"]
    return root, rows, argv


def _main(argv):
    from mapo.eval.cli import main

    return main(argv)


@pytest.mark.slow
def test_corrupt_clip_is_unscored_with_its_reason_and_long_clips_are_counted(tiny_run, capsys):
    root, rows, argv = tiny_run
    out = root / "full"
    assert _main([*argv, "--output-dir", str(out)]) == 0
    preds = read_predictions(str(out / "predictions.jsonl"))
    assert [p.id for p in preds] == [r["id"] for r in rows]
    bad = preds[2]
    assert bad.score is None and bad.unreadable.startswith("undecodable:")
    assert bad.reason.startswith("unreadable audio: undecodable")
    assert all(p.score in (0.0, 1.0) for i, p in enumerate(preds) if i != 2)
    printed = capsys.readouterr().out
    assert "unscorable: 1 of 5 items (unreadable audio ×1)" in printed
    assert "scorer: strict" in printed
    # clips of 0.4, 0.6, (corrupt), 1.0, 1.2 s against the 1 s this processor keeps: only the 1.2 s one is long
    assert "long audio (> 1 s, policy truncate): 1 of 4 clips truncated to 1 s (longest 1.2 s" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["scorer"] == "strict" and results["long_audio"]["affected"] == 1
    assert results["results"]["mmau"]["unscored"] == {"unreadable audio": 1}


@pytest.mark.slow
def test_interrupted_run_resumes_from_the_last_written_batch(tiny_run, monkeypatch):
    import mapo.eval.runner as runner

    root, rows, argv = tiny_run
    out = root / "resumed"
    real = runner.generate_batch
    calls = []

    def crash_on_second_batch(model, processor, batch, settings):
        calls.append([it.id for it in batch.items])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(model, processor, batch, settings)

    monkeypatch.setattr(runner, "generate_batch", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _main([*argv, "--output-dir", str(out)])
    written = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert written == [rows[0]["id"], rows[1]["id"]]  # the first batch was on disk before the kill
    # A kill in the middle of a line: the cut line is dropped and its item generated again.
    with open(out / "predictions.jsonl", "a") as fh:
        fh.write('{"id": "half')
    calls.clear()
    monkeypatch.setattr(runner, "generate_batch", _counting(real, calls))
    assert _main([*argv, "--output-dir", str(out)]) == 0
    # only the unfinished items were generated, in batches of 2 over [2, 3, 4]; item 2 is unreadable: not sent
    assert calls == [[rows[3]["id"]], [rows[4]["id"]]]
    resumed = read_predictions(str(out / "predictions.jsonl"))
    full = read_predictions(str(root / "full" / "predictions.jsonl"))
    assert [(p.id, p.prediction, p.score) for p in resumed] == [(p.id, p.prediction, p.score) for p in full]


def _counting(real, calls):
    def wrapped(model, processor, batch, settings):
        calls.append([it.id for it in batch.items])
        return real(model, processor, batch, settings)

    return wrapped


@pytest.mark.slow
def test_existing_outputs_are_not_replaced_without_overwrite(tiny_run):
    root, rows, argv = tiny_run
    out = root / "full"
    before = (out / "predictions.jsonl").read_text()
    with pytest.raises(OutputExists, match=r"another run \(differs in \['limit'\]"):
        _main([*argv, "--limit", "2", "--output-dir", str(out)])
    with pytest.raises(OutputExists, match="pass --overwrite"):
        _main([*argv, "--no-resume", "--output-dir", str(out)])
    assert (out / "predictions.jsonl").read_text() == before
    with pytest.raises(SystemExit):  # re-scoring into a folder that holds another predictions file
        _main(["--predictions", str(root / "resumed" / "predictions.jsonl"), "--output-dir", str(out)])
    assert _main([*argv, "--limit", "2", "--overwrite", "--output-dir", str(out)]) == 0
    assert len(read_predictions(str(out / "predictions.jsonl"))) == 2


def test_json_written_is_always_valid(tmp_path):
    write_json({"accuracy": float("nan"), "rows": [1.0, float("inf")]}, str(tmp_path / "r.json"))
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and json.loads(text) == {"accuracy": None, "rows": [1.0, None]}


@pytest.mark.slow
def test_ablate_audio_silence_writes_the_reliance_report(tiny_run, capsys):
    root, rows, argv = tiny_run
    out = root / "ablate"
    assert _main([*argv, "--limit", "2", "--ablate-audio", "silence", "--output-dir", str(out)]) == 0
    report = json.loads((out / "ablation.json").read_text())
    assert report["ablate_audio"] == "silence" and report["report"]["mmau"]["overall"]["n"] == 2
    assert len(read_predictions(str(out / "ablate-silence" / "predictions.jsonl"))) == 2
    assert "audio reliance (--ablate-audio silence)" in capsys.readouterr().out
