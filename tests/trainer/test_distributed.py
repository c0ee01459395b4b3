"""Two processes on CPU (gloo) with accelerate: groups split across ranks, rewards gathered, metrics reduced."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_two_process_mapo_run(tmp_path):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        os.path.join(ROOT, "configs", "accelerate", "cpu_2proc.yaml"),
        "--main_process_port",
        "29533",
        os.path.join(ROOT, "tests", "trainer", "_two_process_script.py"),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert len(ranks[0]["records"]) == len(ranks[1]["records"]) == 3
    for rec0, rec1 in zip(ranks[0]["records"], ranks[1]["records"]):
        # rank 0 holds completions 0-1 of the group, rank 1 completions 2-3: normalise over all four.
        rewards = np.array(rec0["rewards"] + rec1["rewards"])
        expected = (rewards - rewards.mean()) / (rewards.std(ddof=1) + 1e-4)
        np.testing.assert_allclose(rec0["advantages"] + rec1["advantages"], expected, atol=1e-5)
    logs = ranks[0]["logs"]
    assert len(logs) == 3 and all("mapo/attn_loss" in h and "mapo/delta_h_abs_mean" in h for h in logs)
