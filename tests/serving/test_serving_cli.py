"""`vla serve --noop` as users run it (a real process), SIGTERM shutdown, and `vla keys`."""
from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys

import numpy as np

from serving.client import PolicyClient

VLA = [sys.executable, "-m", "scripts.cli"]
REPO = pathlib.Path(__file__).resolve().parents[2]


def test_serve_noop_answers_and_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen([*VLA, "serve", "--noop", "--action-dim", "6", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving on tcp://127.0.0.1:"), first + proc.stderr.read()
        meta = json.loads(proc.stdout.readline())
        assert meta["name"] == "noop" and meta["action_dim"] == 6
        with PolicyClient(first.split()[-1], timeout_s=20) as client:
            reply = client.act(images={"wrist": np.zeros((64, 64, 3), np.uint8)}, instruction="wave")
            assert reply.action.tolist() == [0.0] * 6
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        err = proc.stderr.read()
        assert code == 0 and "finishing in-flight requests" in err, err
    finally:
        proc.kill()
        proc.wait()


def test_serve_needs_a_checkpoint_or_noop() -> None:
    out = subprocess.run([*VLA, "serve"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--noop" in out.stderr
    out = subprocess.run([*VLA, "serve", "/no/such/folder", "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_keys_verb_writes_the_layout(tmp_path: pathlib.Path) -> None:
    out = subprocess.run([*VLA, "keys", str(tmp_path / "k"), "--clients", "arm1", "arm2"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "k" / "authorized" / "arm2.key").is_file() and "arm1.key_secret" in out.stdout
    again = subprocess.run([*VLA, "keys", str(tmp_path / "k")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr
