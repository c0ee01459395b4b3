"""Checkpoints that cannot betray a resume: find the newest *complete* one, refuse to mix two runs.

transformers' ``Trainer`` writes a checkpoint folder in place (weights, optimizer, RNG state, then
``trainer_state.json`` last) and its ``get_last_checkpoint`` returns the highest-numbered ``checkpoint-N`` folder
whatever it holds. A process killed during a save (SIGKILL, pre-emption, out of disk) leaves a folder without
``trainer_state.json`` or with truncated weights, and ``--resume_from_checkpoint latest`` then crashes on it
(``Can't find a valid checkpoint``), or worse, loads half a model. :func:`latest_checkpoint` skips such folders
with a warning naming each one; :func:`check_output_dir` refuses to start a new run in a folder that already holds
another run's checkpoints, which ``latest`` might later pick.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Files of which one must exist for the model weights to be there (full model, sharded, LoRA adapter).
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


class OutputDirNotEmptyError(ValueError):
    """A new run was pointed at an ``output_dir`` that already holds checkpoints or a saved model."""


def _safetensors_problem(path: str) -> str | None:
    """Why a ``.safetensors`` file is unusable (truncated, bad header), or ``None`` when it looks complete.

    Reads only the header: its byte length (8 bytes, little endian), the JSON, and the largest tensor end offset,
    which must equal the file size. This catches a save cut off mid-write without loading any tensor.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{os.path.basename(path)} is truncated ({size} bytes)"
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                return f"{os.path.basename(path)} is truncated (header of {header_len} bytes, file {size})"
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError) as err:
        return f"{os.path.basename(path)} is unreadable ({err})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and "data_offsets" in v]
    expected = 8 + header_len + (max(ends) if ends else 0)
    if size < expected:
        return f"{os.path.basename(path)} is truncated ({size} of {expected} bytes)"
    return None


def checkpoint_problem(folder: str) -> str | None:
    """Why ``folder`` cannot be resumed from, or ``None`` when it is a complete checkpoint.

    Complete means: ``trainer_state.json`` exists and parses (transformers writes it last), and the weights exist
    (a full model, its shard index with every shard, a LoRA adapter, or a DeepSpeed/FSDP state folder), with every
    ``.safetensors`` file as long as its header says.
    """
    state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        return f"no {TRAINER_STATE_NAME}"
    try:
        with open(state, encoding="utf-8") as fh:
            json.load(fh)
    except (OSError, ValueError) as err:
        return f"{TRAINER_STATE_NAME} is unreadable ({err})"
    names = set(os.listdir(folder))
    sharded_states = [n for n in names if n.startswith(("global_step", "pytorch_model_fsdp"))]
    if not (names & set(_WEIGHT_FILES)) and not sharded_states:
        return "no model weights (" + ", ".join(_WEIGHT_FILES[:2] + _WEIGHT_FILES[4:5]) + ", ...)"
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index_name in names:
            try:
                with open(os.path.join(folder, index_name), encoding="utf-8") as fh:
                    shards = set(json.load(fh).get("weight_map", {}).values())
            except (OSError, ValueError) as err:
                return f"{index_name} is unreadable ({err})"
            missing = sorted(shards - names)
            if missing:
                return f"weight shard(s) missing: {', '.join(missing)}"
    for name in sorted(names):
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(os.path.join(folder, name))
            if problem:
                return problem
    return None


def list_checkpoints(output_dir: str) -> list[str]:
    """``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CHECKPOINT_RE.match(name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint of ``output_dir``, or ``None`` when there is none.

    Incomplete checkpoints newer than it are skipped with one warning naming each and why (see
    :func:`checkpoint_problem`); they are left on disk for the user to inspect or delete.
    """
    skipped = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                logger.warning(
                    "resume: skipped %d incomplete checkpoint(s) (a save that was interrupted?): %s; resuming from "
                    "%s instead. Delete the incomplete folder(s) once you have checked them.",
                    len(skipped),
                    "; ".join(f"{p} ({why})" for p, why in skipped),
                    path,
                )
            return path
        skipped.append((path, problem))
    if skipped:
        logger.warning(
            "resume: every checkpoint in %s is incomplete: %s",
            output_dir,
            "; ".join(f"{p} ({why})" for p, why in skipped),
        )
    return None


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """Turn the ``resume_from_checkpoint`` setting into a checkpoint folder (or ``None`` for a fresh start).

    ``"latest"`` / ``True``: :func:`latest_checkpoint`; a ``ValueError`` names the folder when it has none. A path:
    checked with :func:`checkpoint_problem`, so an explicit incomplete checkpoint fails with the reason up front
    instead of inside transformers.
    """
    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == "latest":
        path = latest_checkpoint(output_dir)
        if path is None:
            raise ValueError(
                f"resume_from_checkpoint=latest: no complete checkpoint-N folder in output_dir={output_dir!r}. "
                "Point output_dir at the run to resume, or drop --resume_from_checkpoint to start a new run."
            )
        return path
    path = str(resume_from_checkpoint)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"resume_from_checkpoint={path!r}: no such folder")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(
            f"resume_from_checkpoint={path!r} is incomplete ({problem}), e.g. a save that was interrupted. Use "
            "--resume_from_checkpoint latest to take the newest complete one, or an older checkpoint-N folder."
        )
    return path


def check_output_dir(output_dir: str, *, resuming: bool, overwrite: bool) -> None:
    """Refuse a new run in an ``output_dir`` that already holds a run (checkpoints, a saved model or state).

    A new run would overwrite some of the old checkpoints and leave the others, which ``latest`` might later
    resume. Allowed when ``resuming`` (the folder is this run's) or ``overwrite`` (the user said so; the old
    checkpoint folders are then removed so ``latest`` cannot pick one).
    """
    if resuming or not os.path.isdir(output_dir):
        return
    traces = list_checkpoints(output_dir) + [
        os.path.join(output_dir, n)
        for n in (*_WEIGHT_FILES, TRAINER_STATE_NAME)
        if os.path.exists(os.path.join(output_dir, n))
    ]
    if not traces:
        return
    if overwrite:
        import shutil

        for path in list_checkpoints(output_dir):
            shutil.rmtree(path, ignore_errors=True)  # every process of a multi-GPU launch runs this
        logger.warning(
            "overwrite_output_dir: removed the previous run's checkpoints from %s (%d folder(s))",
            output_dir,
            sum(1 for t in traces if _CHECKPOINT_RE.match(os.path.basename(t))),
        )
        return
    shown = ", ".join(os.path.basename(t) for t in traces[:5]) + (" ..." if len(traces) > 5 else "")
    raise OutputDirNotEmptyError(
        f"output_dir={output_dir!r} already holds a run ({shown}). Continue it with --resume_from_checkpoint "
        "latest, replace it with --overwrite_output_dir, or choose another output_dir."
    )


def checkpoint_step(folder: str) -> int:
    """The global step recorded in a checkpoint's ``trainer_state.json`` (``-1`` if unreadable)."""
    try:
        with open(os.path.join(folder, TRAINER_STATE_NAME), encoding="utf-8") as fh:
            return int(json.load(fh).get("global_step", -1))
    except (OSError, ValueError, TypeError):
        return -1
