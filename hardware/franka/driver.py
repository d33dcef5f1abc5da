"""A Franka FR3 as a `robot.Robot` over `franky-control` (libfranka's protocol).

Each action moves a Cartesian target (end-effector deltas in the base frame) and starts an
asynchronous franky motion toward it, so the arm keeps moving while the next policy query runs;
a new target replaces the running motion. libfranka's collision reflexes stay on with the
configured thresholds; after a reflex, `recover()` runs libfranka's automatic error recovery.
`franky` is imported only here, when a Franka is made (it cannot share a process with
pylibfranka: both register the same C++ types).
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from hardware.cameras import open_cameras
from hardware.errors import RealtimeKernelError, RobotConnectionError, RobotMotionError
from hardware.franka.config import GRIPPER_PORT, ROBOT_PORT, FrankaConfig, Realtime
from hardware.geometry import euler_to_matrix, pose_to_vector
from robot.safety import check_action
from robot.types import Observation, StepResult

log = logging.getLogger(__name__)

REALTIME_HINT = (
    "libfranka refuses to run without a real-time kernel. On the lab computer boot the PREEMPT_RT "
    "kernel (Franka's 'Setting up the real-time kernel' guide); on a laptop or against a simulator "
    "set realtime=ignore (`--realtime ignore`), accepting jittery control")


def _import_franky():
    try:
        import franky
    except ImportError as e:
        raise RobotConnectionError(
            "the Franka driver needs franky-control (`pip install franky-control`, the `hardware` extra); "
            "Panda owners on older firmware install panda-python instead") from e
    return franky


def _translate(franky, error: Exception, host: str, what: str) -> Exception:
    """Our typed error for a franky exception (libfranka's messages do not name the host)."""
    text = str(error).rstrip(".")
    if isinstance(error, franky.RealtimeException) or "realtime" in text.lower():
        return RealtimeKernelError(f"{what} on {host}: {text}. {REALTIME_HINT}")
    if isinstance(error, franky.NetworkException):
        return RobotConnectionError(
            f"{what}: cannot reach the Franka controller at {host} (ports {ROBOT_PORT}/{GRIPPER_PORT}): {text}. "
            "Check the address (--host), the network cable to the control box, that FCI is enabled in Desk "
            "and that no other program holds the connection")
    if isinstance(error, franky.IncompatibleVersionException):
        return RobotConnectionError(
            f"{what} on {host}: {text}. franky-control speaks to FR3 firmware; a Panda needs panda-python")
    return RobotMotionError(f"{what} on {host} aborted: {text}. The robot stopped; `recover()` clears the "
                            "reflex (vla robot run recovers at the next reset)")


class Franka:
    """A connected Franka arm; implements `robot.Robot`."""

    def __init__(self, config: FrankaConfig):
        self.config = config
        self.spec = config.spec()
        self._franky = franky = _import_franky()
        self._lock = threading.RLock()
        rt = franky.RealtimeConfig.Ignore if config.realtime is Realtime.IGNORE else franky.RealtimeConfig.Enforce
        try:
            self._robot = franky.Robot(config.host, realtime_config=rt)
            self._robot.relative_dynamics_factor = config.relative_dynamics_factor
            self._robot.set_collision_behavior(list(config.joint_torque_thresholds),
                                               list(config.cartesian_force_thresholds))
            self._gripper = franky.Gripper(config.host) if config.gripper else None
        except franky.Exception as e:
            raise _translate(franky, e, config.host, "connect") from e
        self._target: np.ndarray | None = None
        self._gripper_open: bool | None = None
        self._holds = 0  # hold() calls so far: a blocking move aborts when this changes
        self._cameras = open_cameras(config.cameras)

    # -- state ---------------------------------------------------------------------------------
    def read_state(self) -> dict:
        """Joint positions/velocities, end-effector pose, mode and errors (read only)."""
        with self._lock:
            state = self._robot.state
            joints = self._robot.current_joint_state
        errors = str(state.current_errors)
        return {
            "q": np.asarray(joints.position, dtype=np.float64),
            "dq": np.asarray(joints.velocity, dtype=np.float64),
            "pose": np.asarray(state.O_T_EE.matrix, dtype=np.float64),
            "mode": str(state.robot_mode).split(".")[-1],
            "errors": "" if errors in ("[]", "") else errors,
            "gripper_width": None if self._gripper is None else float(self._gripper.width),
        }

    def _observation(self) -> Observation:
        s = self.read_state()
        if self._gripper is None:
            openness = 1.0 if self._gripper_open in (None, True) else 0.0
        else:
            openness = s["gripper_width"] / float(self._gripper.max_width)
        proprio = np.concatenate([pose_to_vector(s["pose"]), [openness]]).astype(np.float32)
        frames = {name: cam.read_frame() for name, cam in self._cameras.items()}
        images = {name: f.image for name, f in frames.items()}
        camera_times = {name: f.timestamp for name, f in frames.items()}
        return Observation(images=images, proprio=proprio, timestamp=time.monotonic(),
                           info={"joints": s["q"], "joint_velocities": s["dq"], "robot_mode": s["mode"],
                                 "camera_timestamps": camera_times})

    # -- motion --------------------------------------------------------------------------------
    def _run(self, what: str, fn, *args, **kwargs):
        try:
            with self._lock:
                return fn(*args, **kwargs)
        except self._franky.Exception as e:
            raise _translate(self._franky, e, self.config.host, what) from e

    def recover(self) -> None:
        """libfranka's automatic error recovery (after a reflex)."""
        self._run("recover", self._robot.recover_from_errors)

    def _send_gripper(self, open_: bool) -> None:
        if self._gripper is None or open_ == self._gripper_open:
            return
        g, c = self._gripper, self.config
        if open_:
            self._run("gripper open", g.move_async, float(g.max_width), c.gripper_speed)
        else:
            self._run("gripper grasp", g.grasp_async, 0.0, c.gripper_speed, c.gripper_force, 1.0, 1.0)
        self._gripper_open = open_

    def move_joints(self, q: np.ndarray, holds: int | None = None) -> None:
        """Move to joint angles `q` [7] and wait (libfranka checks the joint limits); a hold() aborts it."""
        baseline = self._holds if holds is None else holds
        motion = self._franky.JointMotion(list(np.asarray(q, dtype=np.float64)))
        with self._lock:
            if self._holds != baseline:
                raise RobotMotionError("the move was interrupted by hold() (e-stop or watchdog); the arm holds")
            self._run("joint motion", self._robot.move, motion, asynchronous=True)
        self._join("joint motion", baseline)

    def _join(self, what: str, holds: int) -> None:
        # no lock while waiting: hold() must be able to stop the motion from another thread
        try:
            self._robot.join_motion()
        except self._franky.Exception as e:
            if self._holds != holds:
                raise RobotMotionError("the move was interrupted by hold() (e-stop or watchdog); the arm holds") from e
            raise _translate(self._franky, e, self.config.host, what) from e

    def hold(self) -> None:
        """Stop the running motion where the arm is now."""
        with self._lock:
            self._holds += 1
            self._run("stop", self._robot.stop)
            try:  # wait for the stop; the stopped motion reports "preempted", which is what we asked for
                self._robot.join_motion()
            except self._franky.ControlException as e:
                if "preempted" not in str(e):
                    raise _translate(self._franky, e, self.config.host, "stop") from e
        self._target = self.read_state()["pose"]
        log.info("holding at %s", np.round(self._target[:3, 3], 4).tolist())

    # -- robot.Robot ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        """Recover from errors, move to the home pose, open the gripper; `seed` is unused on hardware."""
        holds = self._holds  # a hold() from here on (e-stop, watchdog) aborts the reset
        if self.config.recover_on_reset and self._robot.has_errors:
            log.warning("recovering from errors: %s", self.read_state()["errors"])
            self.recover()
        self.move_joints(np.array(self.config.home), holds=holds)
        if self._gripper is not None:
            self._run("gripper open", self._gripper.move, float(self._gripper.max_width), self.config.gripper_speed)
        self._gripper_open = True
        self._target = self.read_state()["pose"]
        return self._observation()

    def observe(self) -> Observation:
        """Read the arm and cameras without moving."""
        return self._observation()

    def act(self, action: np.ndarray) -> StepResult:
        """Start a motion toward the target moved by [dx,dy,dz,droll,dpitch,dyaw]; set the gripper."""
        a = check_action(action, self.spec.action_dim)
        if self._target is None:
            self._target = self.read_state()["pose"]
        target = self._target.copy()
        target[:3, 3] += a[:3]
        target[:3, :3] = euler_to_matrix(a[3:6]) @ target[:3, :3]
        motion = self._franky.CartesianMotion(self._franky.Affine(target), self._franky.ReferenceType.Absolute)
        self._run("Cartesian motion", self._robot.move, motion, asynchronous=True)
        self._send_gripper(bool(a[6] > self.config.gripper_threshold))
        self._target = target
        return StepResult(self._observation(), reward=0.0, done=False, success=False, info={"target": target})

    def wait(self) -> None:
        """Block until the running motion ends (raises if a reflex aborted it)."""
        self._join("Cartesian motion", self._holds)

    def close(self, park: bool = False) -> None:
        """Release cameras; with `park`, move home first. The controller keeps holding the arm."""
        try:
            if park:
                self.move_joints(np.array(self.config.home))
        finally:
            for cam in self._cameras.values():
                cam.close()
            # dropping the franky objects disconnects now, while the controller is still there
            self._robot = self._gripper = None
