"""`vla sim eval TASK --policy CKPT --vgps QDIR`: in a subprocess (MuJoCo rendering and TensorFlow
cannot share the pytest process)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import vla
from vla.model.normalization import statistics_from_arrays
from vla.vgps import QFunction
from vla.vgps.config import NAMED_BOUNDS


def _vla(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sim_eval_with_vgps_runs_guided_episodes(tmp_path):
    a = np.random.default_rng(0).uniform(-0.05, 0.05, size=(200, 7))
    a[:, 6] = a[:, 6] > 0
    stats = {"toy": statistics_from_arrays(a, mask=[True] * 6 + [False], num_trajectories=4)}
    vla.OpenVLA.from_preset("tiny", norm_stats=stats, seed=0).save_pretrained(tmp_path / "policy")
    QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"]).save_pretrained(tmp_path / "q")
    common = ["sim", "eval", "widowx-pick-block", "--policy", str(tmp_path / "policy"), "--episodes", "1",
              "--max-steps", "3", "--video", "none", "--image-size", "64"]
    done = _vla(*common, "--vgps", str(tmp_path / "q"), "--vgps-k", "4", "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "V-GPS" in summary["policy"] and summary["per_episode"][0]["steps"] == 3
    assert summary["per_episode"][0]["reason"] == "max_steps"
    bad = _vla(*common, "--vgps", str(tmp_path / "policy"), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "not a Q-function folder" in bad.stderr
