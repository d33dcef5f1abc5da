"""Scripted experts for the robosuite scenes: waypoints tracked by a P-controller through OSC_POSE.

One engine serves every task; the task's data (grasp body, target body, heights, grasp symmetry)
decides the waypoints. The expert reads privileged state (object and gripper poses) from the
scene and closes the loop every step, so it tracks objects that move and retries a grasp it lost.

Phases: approach (above the object, gripper open, yaw aligned) -> descend -> close -> lift ->
[carry above the target -> lower -> open -> retreat] -> hold.

Variants (`sim.config.EXPERT_VARIANTS`; V-GPS needs mixed-quality data):
- `expert`: clean waypoints; a lost grasp is retried.
- `noisy`: the expert plus Gaussian noise on every translation and rotation.
- `suboptimal`: one deliberate mistake per episode, drawn from the seed (as the WidowX experts):
  an off-centre grasp (along the fingers' closing axis), closing the gripper too high, or opening
  it early (as the lift starts for Lift, above the target instead of on it otherwise); no retries, so
  some episodes fail, which is the point.
Each episode's random draws come from (expert seed, episode seed).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.spatial.transform import Rotation

from robot import Observation
from sim.config import EXPERT_VARIANTS
from sim.errors import UnknownExpertError
from sim.robosuite_scenes import MAX_ROTATION, MAX_TRANSLATION, RobosuiteScene
from sim.robosuite_tasks import RobosuiteTask

OPEN, CLOSED = 1.0, 0.0
MISTAKES = ("off_centre", "close_high", "release_early")  # `suboptimal`: one per episode


@dataclasses.dataclass(frozen=True)
class ExpertGains:
    """Controller and waypoint constants of the scripted expert (metres, radians, control steps)."""

    position_gain: float = 1.0  # fraction of the remaining position error commanded per step
    rotation_gain: float = 0.5  # fraction of the remaining rotation error commanded per step
    max_step: float = 0.8 * MAX_TRANSLATION  # head-room under the spec bound for the noise
    max_turn: float = 0.5 * MAX_ROTATION
    hover: float = 0.08  # approach / carry height above the grasp / release point
    retreat: float = 0.12  # how far the gripper rises after releasing (clears PickPlace's 7 cm check)
    reach_tol: float = 0.008  # position error that counts as "at the waypoint"
    coarse_tol: float = 0.02  # looser tolerance for waypoints in free space
    yaw_tol: float = 0.05  # radians
    stall_motion: float = 0.001  # a gripper moving less than this per step while descending ...
    stall_steps: int = 3  # ... for this many steps has arrived as far as it can
    close_steps: int = 6  # steps the gripper needs to close (0.6 s at 10 Hz)
    open_steps: int = 4
    lost_grasp: float = 0.06  # object farther than this from the gripper while carrying: regrasp
    noise_std: tuple[float, float] = (0.004, 0.02)  # `noisy`: translation (m), rotation (rad) per step
    off_centre: float = 0.025  # `off_centre` mistake: grasp this far along the closing axis (m)
    close_high: float = 0.035  # `close_high` mistake: close the fingers this far above the grasp point (m)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class WaypointExpert:
    """A `robot.Policy` that drives a `RobosuiteScene` through its task's waypoints."""

    def __init__(
        self, task: RobosuiteTask, scene: RobosuiteScene, variant: str = "expert", seed: int = 0,
        gains: ExpertGains = ExpertGains(),
    ) -> None:
        if variant not in EXPERT_VARIANTS:
            raise UnknownExpertError(f"no expert variant {variant!r} for {task.env_name}; variants: {EXPERT_VARIANTS}")
        self.task, self.scene, self.variant, self.seed, self.gains = task, scene, variant, seed, gains
        self._episode: int | None = None

    def _start_episode(self) -> None:
        self._episode = self.scene.episode_seed
        self._rng = np.random.default_rng([self.seed, self._episode])
        self._phase, self._timer = "approach", 0
        self._last_eef = np.full(3, np.inf)
        self._grasp_offset = np.zeros(3)  # object position minus gripper position once grasped
        self._lift_z = 0.0
        self.mistake = MISTAKES[self._rng.integers(len(MISTAKES))] if self.variant == "suboptimal" else None
        self._side = self._rng.choice([-1.0, 1.0])  # which finger the off-centre grasp favours

    def act(self, obs: Observation, instruction: str) -> np.ndarray:
        """The next action for the scene's current state (obs is not needed: the state is privileged)."""
        if self._episode != self.scene.episode_seed or self.scene.steps == 0:
            self._start_episode()
        action = self._step()
        if self.variant == "noisy":
            t_std, r_std = self.gains.noise_std
            action[:3] += self._rng.normal(0, t_std, 3)
            action[3:6] += self._rng.normal(0, r_std, 3)
        # the expert's own output stays within the spec (noise included): its demos are valid actions
        action[:3] = np.clip(action[:3], -MAX_TRANSLATION, MAX_TRANSLATION)
        action[3:6] = np.clip(action[3:6], -MAX_ROTATION, MAX_ROTATION)
        return action

    # --- waypoint logic ---------------------------------------------------------------------------
    def _target_yaw(self, eef_rot: Rotation) -> float:
        current = eef_rot.as_euler("xyz")[2]
        if self.task.grasp_symmetry is None:  # any yaw grasps it: keep the gripper's
            return self._yaw_hold
        _, obj_rot = self.scene.body_pose(self.task.grasp_body)
        obj_yaw, period = obj_rot.as_euler("xyz")[2], self.task.grasp_symmetry
        # among the object's symmetric yaws, the one nearest the gripper's current yaw
        return current + (_wrap((obj_yaw - current) * 2 * math.pi / period) * period / (2 * math.pi))

    def _move(self, target: np.ndarray, yaw: float, gripper: float) -> tuple[np.ndarray, float, float]:
        """Action toward (target, gripper down at `yaw`); returns it with the position and yaw errors."""
        g = self.gains
        pos, rot = self.scene.eef_pose()
        err = target - pos
        step = err * g.position_gain
        norm = np.linalg.norm(step)
        if norm > g.max_step:
            step *= g.max_step / norm
        want = Rotation.from_euler("xyz", [math.pi, 0.0, yaw])
        turn = (want * rot.inv()).as_euler("xyz") * g.rotation_gain
        turn = np.clip(turn, -g.max_turn, g.max_turn)
        yaw_err = abs(_wrap(yaw - rot.as_euler("xyz")[2]))
        return np.concatenate([step, turn, [gripper]]), float(np.linalg.norm(err)), yaw_err

    def _step(self) -> np.ndarray:
        g, task = self.gains, self.task
        eef, eef_rot = self.scene.eef_pose()
        obj, _ = self.scene.body_pose(task.grasp_body)
        grasp_point = obj - np.array([0.0, 0.0, task.grasp_depth])
        if self.mistake == "off_centre":
            closing = eef_rot.apply([0.0, 1.0, 0.0])  # Panda fingers slide along the hand's y axis
            grasp_point = grasp_point + self._side * g.off_centre * closing * [1, 1, 0]
        elif self.mistake == "close_high":
            grasp_point = grasp_point + [0, 0, g.close_high]
        self._last_eef, last = eef, self._last_eef
        if self._phase == "approach":
            self._yaw_hold = eef_rot.as_euler("xyz")[2]
        yaw = self._target_yaw(eef_rot)
        carrying = self._phase in ("lift", "carry", "lower")
        if carrying and self.mistake is None and np.linalg.norm(obj - (eef + self._grasp_offset)) > g.lost_grasp:
            self._phase, self._timer = "approach", 0  # dropped it: start over
        phase = self._phase
        if phase == "approach":
            action, err, yaw_err = self._move(grasp_point + [0, 0, g.hover], yaw, OPEN)
            if err < g.coarse_tol and yaw_err < g.yaw_tol:
                self._phase = "descend"
        elif phase == "descend":
            action, err, _ = self._move(grasp_point, yaw, OPEN)
            # stalled (e.g. the palm rests on a can's top): close where it is
            self._timer = self._timer + 1 if np.linalg.norm(eef - last) < g.stall_motion else 0
            if err < g.reach_tol or self._timer >= g.stall_steps:
                self._phase, self._timer = "close", 0
        elif phase == "close":
            action, _, _ = self._move(grasp_point, yaw, CLOSED)
            self._timer += 1
            if self._timer >= g.close_steps:
                self._phase, self._grasp_offset, self._lift_z = "lift", obj - eef, obj[2] + task.lift_height
                self._yaw_hold = yaw
        elif phase == "lift":
            target = np.array([eef[0], eef[1], self._lift_z - self._grasp_offset[2]])
            action, err, _ = self._move(target, self._yaw_hold, CLOSED)
            if self.mistake == "release_early" and task.target_body is None:
                # lets go as the lift starts: one step later the object is already high enough to
                # count as lifted for a moment, and success is judged at every step
                self._phase, self._timer = "open", 0
            elif err < g.coarse_tol and task.target_body is not None:
                self._phase = "carry"
        elif phase in ("carry", "lower"):
            goal, _ = self.scene.body_pose(task.target_body)
            release = goal + [*task.target_offset, task.place_height] - self._grasp_offset
            above = release + [0, 0, g.hover]
            action, err, _ = self._move(above if phase == "carry" else release, self._yaw_hold, CLOSED)
            if phase == "carry" and err < g.coarse_tol:
                early = self.mistake == "release_early"
                self._phase, self._timer = ("open", 0) if early else ("lower", 0)
            elif phase == "lower" and err < g.coarse_tol:  # a drop from +-2 cm is fine
                self._phase, self._timer = "open", 0
        elif phase == "open":
            action, _, _ = self._move(eef, self._yaw_hold, OPEN)
            self._timer += 1
            if self._timer >= g.open_steps:
                self._phase, self._retreat = "retreat", eef + [0, 0, g.retreat]
        else:  # retreat, then hold there
            action, _, _ = self._move(self._retreat, self._yaw_hold, OPEN)
        return action


def make_expert(task: RobosuiteTask, scene: RobosuiteScene, variant: str = "expert", seed: int = 0) -> WaypointExpert:
    """The scripted expert of `task` driving `scene` (a scene built by `task.make`)."""
    if not isinstance(scene, RobosuiteScene):
        raise UnknownExpertError(
            f"the {task.env_name} expert reads privileged state from a RobosuiteScene; got {type(scene).__name__}. "
            "Pass the robot returned by task.make(...)"
        )
    return WaypointExpert(task, scene, variant, seed)
