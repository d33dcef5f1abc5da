"""The WidowX 250 6-DoF as a `robot.Robot`: Bridge end-effector delta actions over Dynamixel servos.

One sync read per step gets every servo's state (position, velocity, voltage, temperature and
hardware error in one block); one sync write sends the six arm goals to the masters only (the
shadows follow through their Secondary ID, so they never fight); the gripper is driven in PWM
mode, as Interbotix does. Targets are solved with `kinematics.inverse`, checked against the joint
limits, and refused (nothing sent) when out of reach.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np

from hardware.cameras import open_cameras
from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.tables import MODELS, HardwareErrorBit, ServoModel
from hardware.errors import (
    JointLimitError, RobotMotionError, ServoFaultError, ServoMissingError, ServoModelError,
)
from hardware.widowx import kinematics
from hardware.widowx.config import ARM_JOINTS, GRIPPER_JOINT, WidowXConfig, count_to_rad, rad_to_count
from robot.safety import check_action
from robot.types import Observation, StepResult

log = logging.getLogger(__name__)

STATE_FIRST, STATE_LAST = "torque_enable", "present_temperature"  # one block, addresses 64..146
EEPROM_FIELDS = ("return_delay_time", "drive_mode", "operating_mode", "secondary_id",
                 "min_position_limit", "max_position_limit")
POLL_S = 0.01  # how often a blocking move re-reads positions
RPM_TO_RAD_S = 2 * np.pi / 60.0


def fault_names(bits: int) -> list[str]:
    """Names of the Hardware Error Status bits set in `bits`."""
    return [b.name.lower() for b in HardwareErrorBit if bits & b] or [f"unknown bits 0x{bits:02x}"]


@dataclasses.dataclass(frozen=True)
class ServoState:
    """One servo's readings from one sync read."""

    joint: str
    id: int
    position: float  # rad
    velocity: float  # rad/s
    voltage: float  # V
    temperature: int  # deg C
    hardware_error: int  # Hardware Error Status bits
    torque: bool


@dataclasses.dataclass(frozen=True)
class ArmState:
    """The whole chain at one instant."""

    servos: dict[str, ServoState]
    timestamp: float

    @property
    def q(self) -> np.ndarray:
        """Arm joint angles [6] (rad)."""
        return np.array([self.servos[j].position for j in ARM_JOINTS])

    @property
    def dq(self) -> np.ndarray:
        """Arm joint velocities [6] (rad/s)."""
        return np.array([self.servos[j].velocity for j in ARM_JOINTS])


class WidowX:
    """A connected WidowX 250 6-DoF; implements `robot.Robot`."""

    def __init__(self, config: WidowXConfig, bus: DynamixelBus | None = None):
        self.config = config
        self.spec = config.spec()
        self._lock = threading.RLock()  # the e-stop and watchdog may call hold() from other threads
        self._bus = bus or DynamixelBus(config.port, config.baud, config.timeout_margin_ms)
        self._models: dict[int, ServoModel] = {s.id: MODELS[s.model] for s in config.servos}
        self._ids = {s.joint: s.id for s in config.servos}
        self._masters = [self._ids[j] for j in ARM_JOINTS]
        self._target: np.ndarray | None = None  # commanded end-effector pose (4x4)
        self._gripper_open: bool | None = None
        self._holds = 0  # hold() calls so far: a blocking move aborts when this changes
        self._cameras = {}
        try:
            self._verify_chain()
            self._recover_faults()
            self._configure_eeprom()
            self._cameras = open_cameras(config.cameras)
        except Exception:
            self._bus.close()
            raise

    # -- connection ----------------------------------------------------------------------------
    def _verify_chain(self) -> None:
        missing, wrong = [], []
        for s in self.config.servos:
            try:
                number = self._bus.ping(s.id)
            except ServoMissingError:
                missing.append(f"{s.joint} (id {s.id})")
                continue
            if number != MODELS[s.model].number:
                wrong.append(f"{s.joint} (id {s.id}) is model {number}, expected {s.model} ({MODELS[s.model].number})")
        if missing:
            raise ServoMissingError(
                f"servos {missing} on {self.config.port} did not answer; check the daisy chain, 12 V power "
                f"and ids (`vla robot check --robot widowx --port {self.config.port}`)")
        if wrong:
            raise ServoModelError(f"unexpected servo models: {wrong}; fix the ids or the servo chain config")

    def recover(self) -> None:
        """Reboot every servo with a latched hardware error, then hold the present pose with torque on."""
        self._recover_faults()
        self.torque(True)
        self.hold()

    def _recover_faults(self) -> None:
        state = self.read_state()
        faulted = {name: s for name, s in state.servos.items() if s.hardware_error}
        if not faulted:
            return
        detail = {name: fault_names(s.hardware_error) for name, s in faulted.items()}
        if not self.config.reboot_on_error:
            raise ServoFaultError(f"servos report hardware errors {detail}; fix the cause and power-cycle, "
                                  "or allow reboot_on_error")
        log.warning("rebooting servos with hardware errors: %s", detail)
        for s in faulted.values():
            self._bus.reboot(s.id)
        still = {name: fault_names(s.hardware_error) for name, s in self.read_state().servos.items()
                 if s.hardware_error}
        if still:
            raise ServoFaultError(
                f"servos {still} still report hardware errors after a reboot; the cause persists: check "
                "supply voltage, let overheated servos cool, free an overloaded joint")

    def _configure_eeprom(self) -> None:
        """Write the chain's EEPROM settings where they differ (torque off on that servo only)."""
        for s in self.config.servos:
            model = self._models[s.id]
            want = {
                "return_delay_time": 0,
                "drive_mode": int(s.reverse),
                "operating_mode": int(s.operating_mode),
                "secondary_id": self._ids[s.shadow_of] if s.shadow_of else 255,
                "min_position_limit": s.min_count,
                "max_position_limit": s.max_count,
            }
            have = self._bus.read_block(s.id, model, "return_delay_time", "secondary_id")
            have |= self._bus.read_block(s.id, model, "max_position_limit", "min_position_limit")
            changes = {k: v for k, v in want.items() if have[k] != v}
            if not changes:
                continue
            # EEPROM takes writes only with torque off: this one joint goes limp for a moment
            log.warning("servo %s (id %d): torque off to write EEPROM %s", s.joint, s.id, changes)
            self._bus.write(s.id, model.register("torque_enable"), 0)
            for name, value in changes.items():
                self._bus.write(s.id, model.register(name), value)

    # -- state ---------------------------------------------------------------------------------
    def read_state(self) -> ArmState:
        """Every servo's position, velocity, voltage, temperature and error, in one sync read."""
        with self._lock:
            raw = self._bus.sync_read_block(self._models, STATE_FIRST, STATE_LAST)
        stamp = time.monotonic()
        servos = {}
        for s in self.config.servos:
            r, model = raw[s.id], self._models[s.id]
            servos[s.joint] = ServoState(
                joint=s.joint, id=s.id,
                position=count_to_rad(r["present_position"]),
                velocity=r["present_velocity"] * model.velocity_unit_rpm * RPM_TO_RAD_S,
                voltage=r["present_input_voltage"] * model.voltage_unit_v,
                temperature=r["present_temperature"],
                hardware_error=r["hardware_error_status"],
                torque=bool(r["torque_enable"]),
            )
        return ArmState(servos, stamp)

    def _checked_state(self) -> ArmState:
        state = self.read_state()
        faulted = {n: fault_names(s.hardware_error) for n, s in state.servos.items() if s.hardware_error}
        if faulted:
            raise ServoFaultError(
                f"servos report hardware errors {faulted}; their torque is off. Stop, fix the cause, then "
                "reconnect (the driver reboots faulted servos once at connect)")
        return state

    def _observation(self, state: ArmState) -> Observation:
        pose = kinematics.forward(state.q)
        gripper = self.config.linkage.openness(state.servos[GRIPPER_JOINT].position)
        proprio = np.concatenate([kinematics.pose_to_vector(pose), [gripper]]).astype(np.float32)
        frames = {name: cam.read_frame() for name, cam in self._cameras.items()}
        images = {name: f.image for name, f in frames.items()}
        camera_times = {name: f.timestamp for name, f in frames.items()}
        return Observation(images=images, proprio=proprio, timestamp=state.timestamp,
                           info={"joints": state.q, "joint_velocities": state.dq, "camera_timestamps": camera_times})

    # -- motion --------------------------------------------------------------------------------
    def torque(self, on: bool) -> None:
        """Enable or disable torque on every servo (enabling holds the present position)."""
        with self._lock:
            if on:
                state = self._checked_state()
                self._send_joints(state.q)  # hold where it is rather than jump to a stale goal
            for s in self.config.servos:
                self._bus.write(s.id, self._models[s.id].register("torque_enable"), int(on))
            if on:
                self._bus.sync_write(self._models[self._masters[0]].register("profile_velocity"),
                                     {i: self.config.profile_velocity for i in self._masters})
                off = [n for n, s in self.read_state().servos.items() if not s.torque]
                if off:
                    raise ServoFaultError(f"torque did not come on for {off}; run `vla robot check`")

    def _send_joints(self, q: np.ndarray) -> None:
        kinematics.check_limits(q)
        goals = {}
        for joint, angle in zip(ARM_JOINTS, q):
            s = self.config.servo(joint)
            count = rad_to_count(float(angle))
            if not s.min_count <= count <= s.max_count:
                raise JointLimitError(f"{joint} goal {count} counts is outside the servo limits "
                                      f"{s.min_count}..{s.max_count}; nothing was sent")
            goals[s.id] = count
        self._bus.sync_write(self._models[self._masters[0]].register("goal_position"), goals)

    def _send_gripper(self, open_: bool) -> None:
        if open_ == self._gripper_open:
            return
        s = self.config.servo(GRIPPER_JOINT)
        pwm = self.config.gripper_pwm if open_ else -self.config.gripper_pwm
        self._bus.write(s.id, self._models[s.id].register("goal_pwm"), pwm)
        self._gripper_open = open_

    def move_joints(self, q: np.ndarray, timeout_s: float | None = None, holds: int | None = None) -> ArmState:
        """Send joint goals and wait until every arm joint is within tolerance (or raise).

        A hold() after the call began (or after `holds` was counted) aborts the move.
        """
        q = np.asarray(q, dtype=np.float64)
        timeout_s = self.config.move_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            baseline = self._holds if holds is None else holds
            if self._holds != baseline:
                raise RobotMotionError("the move was interrupted by hold() (e-stop or watchdog); the arm holds")
            self._send_joints(q)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._holds != baseline:
                raise RobotMotionError("the move was interrupted by hold() (e-stop or watchdog); the arm holds")
            state = self._checked_state()
            error = np.abs(state.q - q)
            if np.all(error < self.config.reach_tolerance_rad):
                return state
            if time.monotonic() > deadline:
                worst = ARM_JOINTS[int(np.argmax(error))]
                raise RobotMotionError(f"arm did not reach its goal within {timeout_s} s ({worst} is "
                                      f"{np.degrees(error.max()):.1f} deg away); is something blocking it?")
            time.sleep(POLL_S)

    def hold(self) -> None:
        """Stop where the arm is now: the goal becomes the present position."""
        with self._lock:
            state = self.read_state()
            self._bus.sync_write(self._models[self._masters[0]].register("goal_position"),
                                 {self._ids[j]: rad_to_count(a) for j, a in zip(ARM_JOINTS, state.q)})
            self._target = kinematics.forward(state.q)
            self._holds += 1
        log.info("holding at %s", np.round(state.q, 3).tolist())

    # -- robot.Robot ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        """Torque on, open the gripper, move to the home pose; `seed` is unused on hardware."""
        holds = self._holds  # a hold() from here on (e-stop, watchdog) aborts the reset
        self.torque(True)
        with self._lock:
            self._gripper_open = None
            self._send_gripper(True)
        state = self.move_joints(np.array(self.config.home), holds=holds)
        self._target = kinematics.forward(state.q)
        return self._observation(state)

    def observe(self) -> Observation:
        """Read the arm and cameras without moving."""
        return self._observation(self._checked_state())

    def act(self, action: np.ndarray) -> StepResult:
        """Move the end-effector target by [dx,dy,dz,droll,dpitch,dyaw] and set the gripper."""
        a = check_action(action, self.spec.action_dim)
        with self._lock:
            state = self._checked_state()
            if self._target is None:
                self._target = kinematics.forward(state.q)
            target = self._target.copy()
            target[:3, 3] += a[:3]
            target[:3, :3] = kinematics.euler_to_matrix(a[3:6]) @ target[:3, :3]
            solution = kinematics.inverse(target, state.q)  # raises JointLimitError; nothing sent
            self._send_joints(solution.q)
            self._send_gripper(bool(a[6] > self.config.gripper_threshold))
            self._target = target
        obs = self._observation(self.read_state())
        return StepResult(obs, reward=0.0, done=False, success=False,
                          info={"commanded_joints": solution.q, "ik_iterations": solution.iterations})

    def park(self) -> None:
        """Move to the sleep pose and turn torque off (the arm rests on its cradle)."""
        self.move_joints(np.array(self.config.sleep))
        self.torque(False)

    def close(self, park: bool = False) -> None:
        """Release the port and cameras; with `park`, rest the arm first. Without it torque stays as is."""
        try:
            if park:
                self.park()
        finally:
            for cam in self._cameras.values():
                cam.close()
            self._bus.close()
