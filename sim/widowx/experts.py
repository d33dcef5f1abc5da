"""Scripted waypoint experts for the WidowX tasks, reading privileged state from the scene.

Variants (V-GPS needs mixed-quality data):
- `expert`: clean waypoints.
- `noisy`: the expert plus Gaussian noise on every translation (sigma `NOISE_STD`).
- `suboptimal`: one deliberate mistake per episode, drawn from the seed — an off-centre grasp,
  closing the gripper early (too high) or late (after starting to lift), or releasing the block
  early over the bowl. Some of these episodes fail, which is the point; `success` is recorded.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from robot import Observation
from sim.config import EXPERT_VARIANTS
from sim.errors import UnknownExpertError
from sim.widowx.scene import MAX_TRANSLATION, WORKSPACE_HIGH, WORKSPACE_LOW, WidowXScene

FAST, SLOW = 0.035, 0.02  # m per step: free-space moves, moves near the block
REACHED = 0.008  # m: a waypoint counts as reached
HOVER_Z, GRASP_Z, CARRY_Z, RELEASE_Z = 0.09, 0.022, 0.12, 0.085  # end-effector heights (m)
CLOSE_STEPS, OPEN_STEPS = 2, 2  # control steps to close / open the fingers (0.4 s each)
PUSH_OFFSET, PUSH_Z, PUSH_PAST = 0.045, 0.02, 0.085  # push_left: start 4.5 cm right of the block, push 8.5 cm
NOISE_STD = 0.006  # m per step, noisy variant
MISTAKES = ("off_centre", "close_early", "close_late", "release_early")  # grasping tasks
PUSH_MISTAKES = ("push_short", "push_high")  # push_left: stops early, or pushes over the block
PUSH_SHORT = (0.2, 0.45)  # share of the push done by push_short; the task is met near 0.35
OFF_CENTRE = 0.022  # m: grasp offset along the finger axis for the off-centre mistake
CLOSE_EARLY_Z = 0.035  # m above the grasp height where close_early shuts the fingers
CLOSE_LATE_Z = 0.03  # m the close_late expert rises with open fingers before closing
PUSH_HIGH_Z = 0.04  # m above the push height: push_high sweeps over the block
FINAL_HOLD = 3  # steps the expert waits at the end (the episode ends earlier on success)


@dataclasses.dataclass(frozen=True)
class Waypoint:
    """Go to `pos` (None: stay) with gripper `grip`; then hold for `hold` steps."""

    pos: tuple[float, float, float] | None
    grip: float
    speed: float = FAST
    hold: int = 0


class WaypointExpert:
    """Follows task waypoints computed at the first call of an episode; implements `robot.Policy`."""

    def __init__(self, task, scene: WidowXScene, variant: str, seed: int) -> None:
        self.task, self.scene, self.variant = task, scene, variant
        self.rng = np.random.default_rng(seed)
        mistakes = PUSH_MISTAKES if task.goal == "push_left" else MISTAKES
        self.mistake = mistakes[self.rng.integers(len(mistakes))] if variant == "suboptimal" else None
        self._episode: int | None = None

    def _plan(self) -> list[Waypoint]:
        s, goal = self.scene, self.task.goal
        bx, by, _ = s.block_pos
        if goal == "push_left":
            short = self.rng.uniform(*PUSH_SHORT) if self.mistake == "push_short" else 1.0
            y0, y1 = by - PUSH_OFFSET, by + PUSH_PAST * short
            z = PUSH_Z + (PUSH_HIGH_Z if self.mistake == "push_high" else 0.0)
            return [
                Waypoint((bx, y0, HOVER_Z), 0.0),
                Waypoint((bx, y0, z), 0.0, SLOW),
                Waypoint((bx, y1, z), 0.0, SLOW),
                Waypoint(None, 0.0, hold=FINAL_HOLD),
            ]
        dy = OFF_CENTRE * self.rng.choice([-1, 1]) if self.mistake == "off_centre" else 0.0
        grasp_z = GRASP_Z + (CLOSE_EARLY_Z if self.mistake == "close_early" else 0.0)
        plan = [
            Waypoint((bx, by + dy, HOVER_Z), 1.0),
            Waypoint((bx, by + dy, grasp_z), 1.0, SLOW),
        ]
        if self.mistake == "close_late":  # starts lifting with open fingers, closes on the way up
            plan += [Waypoint((bx, by + dy, grasp_z + CLOSE_LATE_Z), 1.0, SLOW), Waypoint(None, 0.0, hold=CLOSE_STEPS)]
        else:
            plan += [Waypoint(None, 0.0, hold=CLOSE_STEPS)]
        plan += [Waypoint((bx, by + dy, CARRY_Z), 0.0, SLOW)]
        if goal == "pick_block":
            return plan + [Waypoint(None, 0.0, hold=FINAL_HOLD)]
        wx, wy, _ = s.bowl_pos
        if self.mistake == "release_early":  # lets go half-way to the bowl
            mid = ((bx + wx) / 2, (by + wy) / 2, CARRY_Z)
            return plan + [Waypoint(mid, 0.0), Waypoint(None, 1.0, hold=OPEN_STEPS), Waypoint((wx, wy, CARRY_Z), 1.0)]
        return plan + [
            Waypoint((wx, wy, CARRY_Z), 0.0),
            Waypoint((wx, wy, RELEASE_Z), 0.0, SLOW),
            Waypoint(None, 1.0, hold=OPEN_STEPS),
            Waypoint((wx, wy, CARRY_Z), 1.0),
            Waypoint(None, 1.0, hold=FINAL_HOLD),
        ]

    def act(self, obs: Observation, instruction: str) -> np.ndarray:
        """Next action towards the current waypoint."""
        s = self.scene
        if self._episode != s.episode_seed or not self._plan_left:  # a new episode began
            self._episode = s.episode_seed
            self._plan_left = self._plan()
            self._held = 0
        wp = self._plan_left[0]
        ee = s.ee_pos
        if wp.pos is None:
            delta = np.zeros(3)
            self._held += 1
            if self._held >= wp.hold and len(self._plan_left) > 1:
                self._plan_left.pop(0)
                self._held = 0
        else:
            err = np.asarray(wp.pos) - ee
            dist = float(np.linalg.norm(err))
            delta = err if dist <= wp.speed else err * (wp.speed / dist)  # move at most `speed` per step
            if dist - float(np.linalg.norm(delta)) < REACHED and len(self._plan_left) > 1:
                self._plan_left.pop(0)
        if self.variant == "noisy":
            delta = delta + self.rng.normal(0.0, NOISE_STD, 3)
        # stay inside the scene's action bounds and workspace, so no safety clamp alters the record
        delta = np.clip(delta, -MAX_TRANSLATION, MAX_TRANSLATION)
        delta = np.clip(ee + delta, WORKSPACE_LOW, WORKSPACE_HIGH) - ee
        return np.concatenate([delta, np.zeros(3), [wp.grip]]).astype(np.float32)


def make_expert(task, robot, variant: str, seed: int) -> WaypointExpert:
    """A `WaypointExpert` for `task` on `robot` (a `WidowXScene`)."""
    if variant not in EXPERT_VARIANTS:
        raise UnknownExpertError(f"expert variant {variant!r} is unknown; variants: {EXPERT_VARIANTS}")
    if not isinstance(robot, WidowXScene):
        raise UnknownExpertError(
            f"the WidowX experts read privileged state from a WidowXScene, got {type(robot).__name__}; "
            "build the robot with the same task's make()"
        )
    return WaypointExpert(task, robot, variant, seed)
