"""The real-robot runner on the emulated WidowX with a real PolicyServer on loopback:
a full episode recorded as RLDS, the watchdog when the server dies or hangs, key and Ctrl-C e-stops."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from clips import write_clip
from emulated_widowx import TEST_MARGIN_MS

from hardware.cameras import OpenCVCameraConfig
from hardware.runner import ESTOP, WATCHDOG, RunOptions, run, run_on_robot
from hardware.widowx.config import WidowXConfig

client_mod = pytest.importorskip("serving.client")
cv2 = pytest.importorskip("cv2")
from step_policy import STEP, StepPolicy, serve  # noqa: E402 (needs serving, checked above)

H, W = 32, 40
HZ = 5.0  # Bridge's rate: the 0.4 s watchdog leaves room for a loaded CI machine


@pytest.fixture
def video(tmp_path):
    return write_clip(tmp_path / "cam.avi", W, H)


@pytest.fixture
def config(emulator, video):
    camera = OpenCVCameraConfig("primary", str(video), role="primary", width=W, height=H, loop=True)
    return WidowXConfig(port=emulator.port, timeout_margin_ms=TEST_MARGIN_MS, control_hz=HZ, cameras=(camera,))


@pytest.mark.slow  # tensorflow import and RLDS write/read: ~30-50 s on a loaded 2-core machine
def test_episode_runs_at_rate_and_is_recorded_as_rlds(config, emulator, tmp_path):
    server, thread = serve(StepPolicy())
    try:
        options = RunOptions("push the block", max_steps=6, record_dir=tmp_path / "rlds", park_at_end=True)
        report = run(config, server.address, options, key_stream=open(os.devnull, "rb"))
    finally:
        server.close()
        thread.join(timeout=5)
    assert report.reason == "max_steps" and report.steps == 6 and not report.watchdog_fired
    assert report.loop_period_ms_p50 == pytest.approx(1e3 / HZ, rel=0.3)
    assert emulator.get(1, "torque_enable") == 0  # parked and resting at the end
    from vla.data import load_frames

    name = report.dataset.parent.name
    frames = list(load_frames(name, report.dataset.parents[1]))
    assert len(frames) == 6
    assert frames[0]["images"]["primary"].shape == (H, W, 3)
    np.testing.assert_allclose(frames[0]["action"], STEP, atol=1e-6)
    assert frames[0]["instruction"] == "push the block"
    xs = [f["state"][0] for f in frames]
    assert xs[-1] > xs[0] + 0.01  # the fingertip moved forward step by step


def _run_connected(config, policy_server, options, key_stream=None):
    robot = config.make()
    client = client_mod.PolicyClient(policy_server.address, timeout_s=0.5)
    client.metadata()  # connected before the first timed step, as `run` does
    try:
        return robot, run_on_robot(robot, client, options, key_stream or open(os.devnull, "rb"))
    finally:
        client.close()


def _holding(emulator) -> bool:
    time.sleep(0.2)
    return all(abs(emulator.get(i, "goal_position") - emulator.get(i, "present_position")) <= 2 for i in (1, 2, 4, 7))


def _after_steps(policy, n, fn, *args):
    def wait_then_call():
        while policy.calls < n:
            time.sleep(0.005)
        fn(*args)

    threading.Thread(target=wait_then_call, daemon=True).start()


def test_watchdog_holds_and_stops_when_the_server_is_killed(config, emulator):
    policy = StepPolicy()
    server, thread = serve(policy)
    _after_steps(policy, 3, server.close)
    robot, report = _run_connected(config, server, RunOptions("push", max_steps=200, park_at_end=False))
    thread.join(timeout=5)
    try:
        assert report.reason == WATCHDOG and report.watchdog_fired
        assert 2 <= report.steps <= 4
        assert _holding(emulator)
    finally:
        robot.close()


def test_watchdog_fires_on_a_hung_policy(config, emulator):
    server, thread = serve(StepPolicy(hang_after=3))
    try:
        robot, report = _run_connected(config, server, RunOptions("push", max_steps=50, park_at_end=False))
    finally:
        server.close()
        thread.join(timeout=5)
    try:
        assert report.reason == WATCHDOG and report.steps == 3
        assert _holding(emulator)
    finally:
        robot.close()


def test_key_press_estop_holds_and_sends_nothing_more(config, emulator):
    policy = StepPolicy()
    server, thread = serve(policy)
    read_fd, write_fd = os.pipe()
    _after_steps(policy, 3, os.write, write_fd, b"e")
    try:
        robot, report = _run_connected(config, server, RunOptions("push", max_steps=200), os.fdopen(read_fd, "rb"))
    finally:
        server.close()
        thread.join(timeout=5)
        os.close(write_fd)
    try:
        assert report.reason == ESTOP and report.estopped and "key" in report.error
        writes = len(emulator.log())
        time.sleep(0.3)
        assert len(emulator.log()) == writes  # nothing more went to the bus
        assert _holding(emulator) and emulator.get(1, "torque_enable") == 1  # held, not dropped
    finally:
        robot.close()


def test_estop_pressed_before_the_start_moves_nothing(config, emulator):
    server, thread = serve(StepPolicy())
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"q")
    try:
        robot, report = _run_connected(config, server, RunOptions("push"), os.fdopen(read_fd, "rb"))
    finally:
        server.close()
        thread.join(timeout=5)
        os.close(write_fd)
    try:
        assert report.reason == ESTOP and report.steps == 0
        assert emulator.get(2, "torque_enable") == 0  # still resting as it was
    finally:
        robot.close()


def test_ctrl_c_estop_leaves_the_arm_holding(config, emulator):
    policy = StepPolicy()
    server, thread = serve(policy)
    late = []  # a SIGINT landing after the run must not end the whole pytest session

    def outer_handler(signum, frame):
        late.append(signum)

    outer = signal.signal(signal.SIGINT, outer_handler)
    _after_steps(policy, 3, os.kill, os.getpid(), signal.SIGINT)
    try:
        robot, report = _run_connected(config, server, RunOptions("push", max_steps=200))
        assert signal.getsignal(signal.SIGINT) is outer_handler  # the runner restored the handler
    finally:
        signal.signal(signal.SIGINT, outer)
        server.close()
        thread.join(timeout=5)
    try:
        assert report.reason == ESTOP and "Ctrl-C" in report.error and not late
        assert _holding(emulator) and emulator.get(2, "torque_enable") == 1
    finally:
        robot.close()


def test_cli_run_drives_the_arm_and_exits_zero(emulator, video, capsys):
    from scripts.robot import main as robot_main

    server, thread = serve(StepPolicy())
    try:
        code = robot_main(["run", "--robot", "widowx", "--server", server.address, "--instruction", "push",
                           "--port", emulator.port, "--timeout-margin-ms", str(TEST_MARGIN_MS),
                           "--camera", f"primary={video}@{W}x{H}", "--control-hz", str(HZ),
                           "--max-steps", "3", "--no-park"])
    finally:
        server.close()
        thread.join(timeout=5)
    out = capsys.readouterr().out
    assert code == 0 and "ended: max_steps after 3 steps" in out
    assert emulator.get(1, "torque_enable") == 1  # --no-park: still holding


def test_unreachable_server_fails_before_the_arm_moves(config, emulator):
    from serving.errors import PolicyTimeoutError

    with pytest.raises(PolicyTimeoutError, match="127.0.0.1:9"):
        run(config, "tcp://127.0.0.1:9", RunOptions("push"))
    assert emulator.get(1, "torque_enable") == 0  # never connected, never torqued


def test_run_options_are_checked_before_anything_moves():
    from hardware.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset_name 'My Rollouts'"):
        RunOptions("push", dataset_name="My Rollouts")
    with pytest.raises(ConfigError, match="max_steps"):
        RunOptions("push", max_steps=0)
