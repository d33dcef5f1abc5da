"""The Franka driver (franky-control) against franky-sim, which speaks libfranka's protocol on loopback."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import numpy as np
import pytest

from clips import write_clip

from hardware.cameras import OpenCVCameraConfig
from hardware.errors import RealtimeKernelError, RobotConnectionError
from hardware.franka.config import FrankaConfig, Realtime
from robot.protocols import Robot

pytest.importorskip("franky", reason="franky-control is not installed (`hardware` extra)")

REPO = pathlib.Path(__file__).resolve().parents[2]
READY_LINE = "Connect to the server using"
START_TIMEOUT_S = 60.0


def _franky_sim() -> str | None:
    """The franky-sim executable: $FRANKY_SIM, the repo's .venv-franky-sim (`make franky-sim`), or PATH."""
    for candidate in (os.environ.get("FRANKY_SIM"), REPO / ".venv-franky-sim" / "bin" / "franky-sim"):
        if candidate and pathlib.Path(candidate).is_file():
            return str(candidate)
    return shutil.which("franky-sim")


@pytest.fixture(scope="module")
def sim_host(tmp_path_factory):
    exe = _franky_sim()
    if exe is None:
        pytest.skip("franky-sim is absent: `make franky-sim` builds .venv-franky-sim (it needs numpy 2)")
    # a loopback address of our own, so parallel runs do not collide on the fixed ports 1337/1338
    host = f"127.0.{os.getpid() % 250 + 1}.{(os.getpid() // 250) % 250 + 2}"
    log = tmp_path_factory.mktemp("franky_sim") / "franky-sim.log"
    with log.open("w") as out:  # a file, not a pipe: an undrained pipe would stall the simulator
        proc = subprocess.Popen([exe, "--simulator", "mujoco", "--hostname", host],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while READY_LINE not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if READY_LINE not in log.read_text():
        proc.kill()
        pytest.fail(f"franky-sim did not start within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")
    yield host
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_check_reads_seven_joints_without_moving(sim_host):
    # first in the file: franky-sim serves one client at a time and `arm` below keeps its connection
    from hardware.cli import robot_check

    code, table = robot_check("franka", host=sim_host, realtime="ignore")
    joints = [line for line in table.splitlines() if line.startswith("joint ")]
    assert code == 0 and len(joints) == 7, table
    assert all(len(line.split()[2].split(".")[1]) >= 3 for line in joints)  # radians, >= 3 decimals
    assert "robot mode: Idle" in table


def test_enforced_realtime_on_this_kernel_explains_the_fix(sim_host):
    if pathlib.Path("/sys/kernel/realtime").is_file():
        pytest.skip("this kernel is real-time: libfranka accepts it")
    with pytest.raises(RealtimeKernelError, match="PREEMPT_RT.*--realtime ignore"):
        FrankaConfig(host=sim_host).make()  # the default, right for a lab machine


@pytest.fixture(scope="module")
def arm(sim_host, tmp_path_factory):
    clip = write_clip(tmp_path_factory.mktemp("clip") / "cam.avi", 40, 32)
    camera = OpenCVCameraConfig("primary", str(clip), role="primary", width=40, height=32, loop=True)
    robot = FrankaConfig(host=sim_host, realtime=Realtime.IGNORE, relative_dynamics_factor=0.5,
                         cameras=(camera,)).make()
    yield robot
    robot.close()


def test_connects_and_reads_seven_joints(arm):
    assert isinstance(arm, Robot)
    state = arm.read_state()
    assert state["q"].shape == (7,) and state["mode"] and state["errors"] == ""


def test_reset_reaches_ready_pose_and_opens_gripper(arm):
    obs = arm.reset()
    np.testing.assert_allclose(obs.info["joints"], arm.config.home, atol=0.01)
    assert obs.proprio.shape == (7,) and obs.proprio[6] > 0.9


def test_act_moves_the_end_effector_by_the_delta(arm):
    start = arm.reset().proprio[:3].astype(np.float64)
    delta = np.array([0.03, -0.02, 0.02, 0.0, 0.0, 0.0, 0.0])
    arm.act(delta)
    arm.wait()
    reached = arm.observe().proprio
    np.testing.assert_allclose(reached[:3], start + delta[:3], atol=0.003)
    time.sleep(1.0)  # the hand closes at gripper_speed
    assert arm.observe().proprio[6] < 0.5


def test_hold_stops_a_running_motion(arm):
    arm.reset()
    start = arm.observe().proprio[:3].astype(np.float64)
    arm.act(np.array([0.0, 0.0, 0.05, 0, 0, 0, 1.0]))
    time.sleep(0.05)
    arm.hold()
    held = arm.observe().proprio[:3]
    time.sleep(0.3)
    np.testing.assert_allclose(arm.observe().proprio[:3], held, atol=1e-3)
    assert held[2] - start[2] < 0.045  # stopped short of the target


def test_hold_during_reset_aborts_the_move(arm):
    import threading

    from hardware.errors import RobotMotionError

    # a long way home (1.2 rad on joint 0), so a loaded machine cannot finish the reset before hold() lands
    away = np.array(arm.config.home) + np.array([1.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    arm.move_joints(away)
    raised = []

    def reset():
        try:
            arm.reset()
        except RobotMotionError as e:
            raised.append(e)

    thread = threading.Thread(target=reset)
    thread.start()
    deadline = time.monotonic() + 10
    while arm.read_state()["q"][0] > away[0] - 0.02 and time.monotonic() < deadline:  # wait until it is on its way
        time.sleep(0.005)
    arm.hold()  # what the e-stop key thread does
    thread.join(timeout=10)
    assert raised and "interrupted by hold" in str(raised[0])
    q = arm.observe().info["joints"]
    assert arm.config.home[0] + 0.02 < q[0] < away[0] - 0.02  # stopped between where it was and home


def test_runner_drives_the_simulated_fr3(arm):
    pytest.importorskip("serving.server")
    from serving.client import PolicyClient
    from step_policy import STEP, StepPolicy, serve

    from hardware.runner import RunOptions, run_on_robot

    server, thread = serve(StepPolicy())
    client = PolicyClient(server.address, timeout_s=1.0)
    try:
        client.metadata()
        start = arm.reset().proprio[:3].astype(np.float64)
        report = run_on_robot(arm, client, RunOptions("push", max_steps=4, park_at_end=False), open(os.devnull, "rb"))
    finally:
        client.close()
        server.close()
        thread.join(timeout=5)
    assert report.reason == "max_steps" and report.steps == 4 and not report.watchdog_fired
    moved = arm.observe().proprio[:3] - start
    # the runner holds at the end, so the last target may be cut short; the direction is the policy's
    assert STEP[0] < moved[0] <= 4 * STEP[0] + 0.003
    np.testing.assert_allclose(moved[1:], 0.0, atol=0.003)


def test_nothing_listening_names_the_host():
    with pytest.raises(RobotConnectionError, match=r"127\.0\.0\.254 \(ports 1337/1338\)"):
        FrankaConfig(host="127.0.0.254", realtime=Realtime.IGNORE).make()
