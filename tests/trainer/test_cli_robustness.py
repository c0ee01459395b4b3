"""``mapo train`` as a user meets it: errors before the model loads (one ``error:`` line, exit 2), the judge from
the ``MAPO_JUDGE_*`` variables, resume past a half-written checkpoint, a used output_dir refused, INFO logging."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nltk
import pytest
from transformers.integrations import integration_utils

import mapo.modality
from mapo.cli import main as mapo_main
from mapo.pos_gate import taggers
from mapo.trainer.cli import build_rewards, parse
from mapo.trainer.progress import compact


def _not_found(resource, *a, **k):
    raise LookupError(resource)


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load the weights fails the test: the checks must come first."""

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the checks ran")

    monkeypatch.setattr(mapo.modality, "load_policy_model", refuse)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, save_model_dir):
    return save_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture
def run_train(write_jsonl, train_config):
    """Factory: ``mapo train`` on two tone rows with the tiny config (``yaml_fields`` override it); the exit code."""

    def run(tmp_path, model_dir, *extra, **yaml_fields):
        data = write_jsonl(tmp_path / "data", "tones", 2, 300)
        cfg = train_config(tmp_path, **{"train_files": [str(data)], **yaml_fields})
        return mapo_main(
            [
                "train",
                "--config",
                str(cfg),
                "--model_name_or_path",
                str(model_dir),
                "--output_dir",
                str(tmp_path / "out"),
                *extra,
            ]
        )

    return run


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"train_files": []}, "error: no training data: set train_files in the YAML config"),
        ({"pos_tagger": "nltkk"}, "error: pos_tagger='nltkk': use 'nltk'"),
        ({"report_to": ["tensorboard"]}, "pip install 'mapo-rl[tensorboard]'"),
        ({"pos_tagger": "nltk"}, "python -m nltk.downloader averaged_perceptron_tagger_eng"),
        ({"target_layers": [0, 7]}, "target_layers must be distinct layer indices in [0, 2)"),
        (
            {"rewards": ["accuracy", "format", "consistency"]},
            "Set judge_base_url (and judge_model) in the YAML",
        ),
        ({"reward_nan_policy": "zero"}, "error: reward_nan_policy must be one of"),
    ],
)
def test_config_errors_are_one_line_exit_2_before_the_model_loads(
    fields, message, tmp_path, model_dir, no_model_load, capsys, monkeypatch, run_train, train_config
):
    monkeypatch.delenv("MAPO_JUDGE_BASE_URL", raising=False)
    # the machine running the test may have tensorboard or the NLTK data: make both absent
    monkeypatch.setattr(integration_utils, "is_tensorboard_available", lambda: False)
    monkeypatch.setattr(taggers, "_BUILT", {})
    monkeypatch.setattr(nltk.data, "find", _not_found)
    start = time.perf_counter()
    if "train_files" in fields:
        cfg = train_config(tmp_path, **fields)
        code = mapo_main(["train", "--config", str(cfg), "--model_name_or_path", str(model_dir)])
    else:
        code = run_train(tmp_path, model_dir, **fields)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert err.count("error:") == 1 and "--debug" in err
    assert time.perf_counter() - start < 60


def test_debug_shows_the_traceback(tmp_path, model_dir, no_model_load, run_train):
    with pytest.raises(ValueError, match="pos_tagger='nltkk'"):
        run_train(tmp_path, model_dir, "--debug", pos_tagger="nltkk")


def test_bad_training_rows_are_reported_before_the_model_loads(
    tmp_path, model_dir, no_model_load, capsys, write_jsonl, train_config
):
    data = write_jsonl(tmp_path / "data", "tones", 2, 300)
    lines = data.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["answer"] = "medium"
    missing = dict(json.loads(lines[0]), audio="clips/nowhere.wav", id="tones-x")
    data.write_text("\n".join([lines[0], json.dumps(broken), json.dumps(missing)]) + "\n")
    cfg = train_config(tmp_path, train_files=[str(data)])
    code = mapo_main(
        [
            "train",
            "--config",
            str(cfg),
            "--model_name_or_path",
            str(model_dir),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "error: 2 of 3 training rows are unusable" in err
    assert f"{data}:2: id=tones-1: answer='medium' does not designate exactly one of choices" in err
    assert f"{data}:3: id=tones-x: audio " in err and "file not found" in err


def test_judge_settings_come_from_the_documented_environment_variables(monkeypatch, tmp_path, train_config):
    monkeypatch.setenv("MAPO_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MAPO_JUDGE_MODEL", "judge-from-env")
    monkeypatch.setenv("MAPO_JUDGE_TIMEOUT", "7")
    cfg = train_config(tmp_path, rewards=["accuracy", "format", "consistency"])
    script, _, _ = parse(
        ["--config", str(cfg), "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
    )
    funcs, weights, _ = build_rewards(script, None)
    judge = funcs[2].client
    assert (judge.url, judge.model, judge.timeout) == (
        "http://127.0.0.1:9/v1/chat/completions",
        "judge-from-env",
        7.0,
    )
    assert weights == [2.0, 1.0, 1.0]
    # the YAML keys win over the environment
    script.judge_model, script.judge_timeout = "judge-from-yaml", None
    assert build_rewards(script, None).funcs[2].client.model == "judge-from-yaml"


def test_progress_line_is_compact():
    logs = {
        "loss": 0.0123456,
        "reward": 1.25,
        "rewards/accuracy_reward/mean": 0.5,
        "mapo/omega_max": 3.0,
        "completions/mean_length": 8.0,
    }
    assert compact(logs) == "loss 0.01235 · reward 1.25 · acc 0.5"


class _YesJudge:
    """An OpenAI-compatible judge on 127.0.0.1 that answers YES and counts its requests."""

    def __init__(self):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                body = json.dumps({"choices": [{"message": {"content": "YES"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.mark.slow
def test_env_judge_run_then_resume_past_a_half_written_checkpoint(
    tmp_path, model_dir, monkeypatch, caplog, capsys, run_train
):
    judge = _YesJudge()
    monkeypatch.setenv("MAPO_JUDGE_BASE_URL", judge.url)
    fields = dict(rewards=["accuracy", "format", "consistency"], save_strategy="steps", save_steps=1)
    try:
        with caplog.at_level(logging.INFO, logger="mapo"):
            assert run_train(tmp_path, model_dir, **fields) == 0
        out = tmp_path / "out"
        assert "audio canary: audio/influence = " in caplog.text
        assert f"saved to {out}" in caplog.text
        assert "training done: 2 steps in " in caplog.text and "final reward " in caplog.text
        assert f"checkpoints: 2 (newest {out / 'checkpoint-2'})" in caplog.text
        state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
        logged = [h for h in state["log_history"] if "rewards/consistency_reward/nan_frac" in h]
        assert len(logged) == 2 and all(h["rewards/consistency_reward/nan_frac"] == 0.0 for h in logged)
        assert "audio/influence" in state["log_history"][0]
        assert "{'loss'" not in capsys.readouterr().err  # no per-step dicts on the console

        # SIGKILL during the second save: trainer_state.json (written last) never appeared
        os.remove(out / "checkpoint-2" / "trainer_state.json")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mapo"):
            assert (
                run_train(
                    tmp_path, model_dir, "--resume_from_checkpoint", "latest", "--max_steps", "3", **fields
                )
                == 0
            )
        assert "checkpoint-2 (no trainer_state.json)" in caplog.text
        assert f"resuming from {out / 'checkpoint-1'} (step 1)" in caplog.text
        assert "training done: 3 steps" in caplog.text

        # a new run into the same folder is refused
        code = run_train(tmp_path, model_dir, **fields)
        err = capsys.readouterr().err
        assert code == 2 and "already holds a run" in err and "--overwrite_output_dir" in err
    finally:
        judge.close()
