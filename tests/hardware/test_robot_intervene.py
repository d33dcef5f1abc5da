"""`vla robot run --intervene keyboard` on the emulated WidowX with a served tiny RT-H checkpoint: a typed
hotkey overrides the served motion until cleared, and the episode is recorded with motion_source."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from clips import write_clip
from emulated_widowx import TEST_MARGIN_MS

from hardware.cameras import OpenCVCameraConfig
from hardware.errors import ConfigError
from hardware.runner import RunOptions, run
from hardware.widowx.config import WidowXConfig

pytest.importorskip("serving.client")
from serving.policies import ModelPolicy  # noqa: E402 (needs serving, checked above)
from step_policy import StepPolicy, serve  # noqa: E402

H, W = 32, 40
HZ = 2.0  # two policy calls on an overridden step; the 1 s watchdog leaves room on a loaded machine
UP = "move arm up"  # hotkey "r"


class CountingModelPolicy(ModelPolicy):
    """The served tiny model; counts requests so the test can type at a known point of the run."""

    calls = 0

    def act_batch(self, requests):
        out = super().act_batch(requests)
        self.calls += len(requests)
        return out


@pytest.fixture(scope="module")
def rth_model():
    """A tiny checkpoint marked RT-H (untrained: its own motions never read "move arm up")."""
    import vla
    from vla.model.normalization import statistics_from_arrays
    from vla.rth.query import RTHInfo, set_rth_info

    small = np.random.default_rng(0).uniform(-0.003, 0.003, (64, 7))  # mm-sized steps keep the arm near home
    small[:, 6] = np.linspace(0.0, 1.0, 64)
    model = vla.OpenVLA.from_preset("tiny", norm_stats={"robot": statistics_from_arrays(small)}, seed=0)
    set_rth_info(model, RTHInfo.new([UP, "stop"], ["push the block"], lookahead=1, mix=0.5))
    return model


@pytest.fixture
def config(emulator, tmp_path):
    video = write_clip(tmp_path / "cam.avi", W, H)
    camera = OpenCVCameraConfig("primary", str(video), role="primary", width=W, height=H, loop=True)
    return WidowXConfig(port=emulator.port, timeout_margin_ms=TEST_MARGIN_MS, control_hz=HZ, cameras=(camera,))


def _type_after(policy, calls: int, fd: int, keys: bytes) -> None:
    def wait_then_type():
        while policy.calls < calls:
            time.sleep(0.005)
        os.write(fd, keys)

    threading.Thread(target=wait_then_type, daemon=True).start()


@pytest.mark.slow  # a served tiny model at 2 Hz plus the RLDS write and read: ~20-40 s on 2 loaded cores
def test_typed_hotkey_overrides_until_cleared_and_is_recorded(rth_model, config, tmp_path):
    from vla.rth.query import rth_info
    from vla.rth.train import read_motion_episodes

    policy = CountingModelPolicy(rth_model, name="rth-tiny")
    server, thread = serve(policy)
    read_fd, write_fd = os.pipe()
    _type_after(policy, 2, write_fd, b"r")  # step 1's motion is the policy's; "r" lands during step 2
    _type_after(policy, 6, write_fd, b"\n")  # Enter alone: the policy's motions again
    try:
        options = RunOptions("push the block", max_steps=8, record_dir=tmp_path / "rlds", intervene="keyboard",
                             park_at_end=False)
        report = run(config, server.address, options, key_stream=os.fdopen(read_fd, "rb"))
    finally:
        server.close()
        thread.join(timeout=5)
        os.close(write_fd)
    assert report.reason == "max_steps" and report.steps == 8, report.summary()
    (episode,) = read_motion_episodes(report.dataset.parent.name, report.dataset.parents[1])
    sources = list(episode.sources)
    assert sources[0] == "policy" and sources[-1] == "policy" and "override" in sources, sources
    first, last = sources.index("override"), len(sources) - 1 - sources[::-1].index("override")
    assert set(sources[first:last + 1]) == {"override"}  # held from the key press until Enter
    assert [m == UP for m in episode.motions] == [s == "override" for s in sources]
    assert episode.checkpoint_id == rth_info(rth_model).checkpoint_id  # what learn-corrections checks


@pytest.mark.parametrize("flags, message", [
    (["--intervene", "keyboard"], "needs an RT-H checkpoint"),  # a flat server
    (["--intervene", "keybord"], "did you mean 'keyboard'"),
])
def test_cli_refuses_a_flat_server_and_an_unknown_intervener(flags, message, emulator, tmp_path, capsys):
    from scripts.robot import main as robot_main

    video = write_clip(tmp_path / "cam.avi", W, H)
    server, thread = serve(StepPolicy())
    try:
        code = robot_main(["run", "--robot", "widowx", "--server", server.address, "--instruction", "push",
                           "--port", emulator.port, "--timeout-margin-ms", str(TEST_MARGIN_MS),
                           "--camera", f"primary={video}@{W}x{H}", "--record-dir", str(tmp_path / "rlds"), *flags])
    finally:
        server.close()
        thread.join(timeout=5)
    assert code == 2 and message in capsys.readouterr().err
    assert emulator.get(1, "torque_enable") == 0  # refused before anything moved


def test_intervene_needs_a_record_dir():
    with pytest.raises(ConfigError, match="pass --record-dir"):
        RunOptions("push", intervene="keyboard")
