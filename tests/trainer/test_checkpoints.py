"""Checkpoints that cannot betray a resume: ``latest`` skips incomplete ones; a new run refuses a used output_dir."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from safetensors.torch import save_file

from mapo.trainer.checkpoints import (
    OutputDirNotEmptyError,
    check_output_dir,
    checkpoint_problem,
    latest_checkpoint,
    resolve_resume,
)


def _complete(folder, step: int):
    os.makedirs(folder, exist_ok=True)
    save_file({"w": torch.arange(6, dtype=torch.float32)}, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "trainer_state.json"), "w") as fh:
        json.dump({"global_step": step}, fh)
    return str(folder)


def test_latest_skips_a_checkpoint_killed_mid_save(tmp_path, caplog):
    out = tmp_path / "run"
    good = _complete(out / "checkpoint-2", 2)
    # SIGKILL before trainer_state.json was written (transformers writes it last)
    no_state = out / "checkpoint-4"
    _complete(no_state, 4)
    os.remove(no_state / "trainer_state.json")
    # SIGKILL while the weights were written: the file is shorter than its header says
    truncated = out / "checkpoint-6"
    _complete(truncated, 6)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    # no weights at all
    no_weights = out / "checkpoint-8"
    _complete(no_weights, 8)
    os.remove(no_weights / "model.safetensors")
    (out / "checkpoint-9").write_text("a file, not a checkpoint folder")

    with caplog.at_level(logging.WARNING, logger="mapo.trainer.checkpoints"):
        assert latest_checkpoint(str(out)) == good
    warning = caplog.text
    for name, why in (
        ("checkpoint-4", "no trainer_state.json"),
        ("checkpoint-6", "model.safetensors is truncated"),
        ("checkpoint-8", "no model weights"),
    ):
        assert name in warning and why in warning, warning
    assert resolve_resume("latest", str(out)) == good and resolve_resume(True, str(out)) == good


def test_explicit_incomplete_checkpoint_and_empty_run_fail_with_the_reason(tmp_path):
    out = tmp_path / "run"
    half = out / "checkpoint-3"
    _complete(half, 3)
    os.remove(half / "trainer_state.json")
    with pytest.raises(ValueError, match=r"checkpoint-3' is incomplete \(no trainer_state.json\)"):
        resolve_resume(str(half), str(out))
    with pytest.raises(ValueError, match="no complete checkpoint-N folder"):
        resolve_resume("latest", str(out))
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(out / "checkpoint-99"), str(out))
    assert resolve_resume(None, str(out)) is None


def test_sharded_checkpoint_with_a_missing_shard_is_incomplete(tmp_path):
    folder = tmp_path / "checkpoint-1"
    _complete(folder, 1)
    os.remove(folder / "model.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        )
    )
    save_file({"a": torch.zeros(2)}, str(folder / "model-00001-of-00002.safetensors"))
    assert checkpoint_problem(str(folder)) == "weight shard(s) missing: model-00002-of-00002.safetensors"
    save_file({"b": torch.zeros(2)}, str(folder / "model-00002-of-00002.safetensors"))
    assert checkpoint_problem(str(folder)) is None


def test_new_run_refuses_a_used_output_dir(tmp_path):
    out = tmp_path / "run"
    check_output_dir(str(out), resuming=False, overwrite=False)  # does not exist: fine
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    check_output_dir(str(out), resuming=False, overwrite=False)  # unrelated files: fine
    _complete(out / "checkpoint-5", 5)
    with pytest.raises(
        OutputDirNotEmptyError, match=r"already holds a run \(checkpoint-5\).*--overwrite_output_dir"
    ):
        check_output_dir(str(out), resuming=False, overwrite=False)
    check_output_dir(str(out), resuming=True, overwrite=False)  # continuing this run
    assert (out / "checkpoint-5").is_dir()
    check_output_dir(str(out), resuming=False, overwrite=True)
    assert not (out / "checkpoint-5").exists() and (out / "notes.txt").exists()
