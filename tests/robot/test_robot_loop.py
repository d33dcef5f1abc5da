"""The control loop, rigs and specs, driven with a small kinematic robot that implements `robot.Robot`.

The robot here is a real (if tiny) implementation of the protocol — a point end effector that
must reach a goal — so the loop is exercised end to end without MuJoCo; the MuJoCo scenes run
the same loop in tests/sim.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from robot import (
    CameraSpec,
    EmbodimentSpec,
    MissingCameraError,
    Observation,
    Policy,
    Robot,
    SafetyFilter,
    SafetyLimits,
    SpecError,
    StepResult,
    UnknownRigError,
    apply_rig,
    resolve_rig,
    run_episode,
)
from robot import loop

GOAL = np.array([0.3, 0.1, 0.1])


class PointRobot:
    """An end effector that moves by exactly the commanded delta; success within 1 cm of GOAL."""

    def __init__(self) -> None:
        self.spec = EmbodimentSpec(
            name="point",
            control_hz=5.0,
            action_low=(-0.05,) * 3 + (-0.25,) * 3 + (0.0,),
            action_high=(0.05,) * 3 + (0.25,) * 3 + (1.0,),
            cameras=(CameraSpec("front", "primary", 8, 8), CameraSpec("hand", "wrist", 8, 8)),
            proprio_names=("x", "y", "z"),
        )
        self.pos = np.zeros(3)
        self.moves = 0

    def reset(self, seed=None):
        rng = np.random.default_rng(seed)
        self.pos = np.array([0.2, 0.0, 0.1]) + rng.uniform(-0.02, 0.02, 3)
        return self.observe()

    def observe(self):
        shade = np.uint8(255 * min(1.0, float(np.linalg.norm(self.pos - GOAL))))
        images = {"front": np.full((8, 8, 3), shade, np.uint8), "hand": np.zeros((8, 8, 3), np.uint8)}
        return Observation(images, self.pos.astype(np.float32), time.monotonic(), {})

    def act(self, action):
        self.moves += 1
        self.pos = self.pos + np.asarray(action)[:3]
        ok = bool(np.linalg.norm(self.pos - GOAL) < 0.01)
        return StepResult(self.observe(), float(ok), ok, ok, {})

    def close(self):
        pass


class Reacher:
    """Moves towards GOAL at most 2 cm per step; checks it receives images keyed by role."""

    def act(self, obs, instruction):
        assert set(obs.images) <= {"primary", "wrist"}
        delta = np.clip(GOAL - obs.proprio, -0.02, 0.02)
        return np.concatenate([delta, np.zeros(3), [1.0]])


class Reply:
    def __init__(self, action):
        self.action = action


def test_protocols_are_satisfied():
    assert isinstance(PointRobot(), Robot) and isinstance(Reacher(), Policy)


def test_reacher_succeeds_and_records_everything():
    robot = PointRobot()
    res = run_episode(robot, Reacher(), "reach", max_steps=50, seed=3)
    assert res.success and res.reason == loop.SUCCESS and res.error is None
    assert res.steps == robot.moves == len(res.actions) == len(res.policy_latency_s) == len(res.act_latency_s)
    assert len(res.frames) == len(res.proprio) == res.steps + 1
    assert set(res.frames[0]) == {"primary", "wrist"}


def test_reply_objects_with_action_are_accepted_and_rig_selects_roles():
    class ReplyPolicy(Reacher):
        def act(self, obs, instruction):
            return Reply(super().act(obs, instruction))

    res = run_episode(PointRobot(), ReplyPolicy(), "reach", max_steps=50, rig="eye_in_hand", seed=0)
    assert res.success and set(res.frames[0]) == {"wrist"}


def test_max_steps_ends_without_success():
    res = run_episode(PointRobot(), Reacher(), "reach", max_steps=2, seed=0)
    assert not res.success and res.reason == loop.MAX_STEPS and res.steps == 2


def test_policy_error_stops_safely():
    class Broken:
        def act(self, obs, instruction):
            raise RuntimeError("GPU on fire")

    robot = PointRobot()
    res = run_episode(robot, Broken(), "reach", max_steps=5)
    assert res.reason == loop.POLICY_ERROR and "GPU on fire" in res.error
    assert robot.moves == 0 and res.steps == 0


def test_policy_timeout_stops_safely():
    class Slow(Reacher):
        def act(self, obs, instruction):
            time.sleep(0.5)
            return super().act(obs, instruction)

    robot = PointRobot()
    t0 = time.perf_counter()
    res = run_episode(robot, Slow(), "reach", max_steps=5, policy_timeout_s=0.05)
    assert res.reason == loop.POLICY_TIMEOUT and robot.moves == 0
    assert time.perf_counter() - t0 < 0.4


@pytest.mark.parametrize("bad", [np.zeros(6), np.full(7, np.nan), "left"])
def test_malformed_policy_output_does_not_move_the_robot(bad):
    class Bad:
        def act(self, obs, instruction):
            return bad

    robot = PointRobot()
    res = run_episode(robot, Bad(), "reach", max_steps=5)
    assert res.reason == loop.UNSAFE_ACTION and robot.moves == 0 and res.error


def test_fixed_rate_paces_the_loop():
    res = run_episode(PointRobot(), Reacher(), "reach", max_steps=4, rate_hz=20.0, stop_on_success=False, seed=0)
    assert res.steps == 4
    assert res.wall_s >= 3 / 20.0 and res.overruns == 0


def test_safety_filter_in_the_loop_counts_clamps():
    class Lunge:
        def act(self, obs, instruction):
            return np.array([1.0, 0, 0, 0, 0, 0, 1.0])

    limits = SafetyLimits((0.0, -1.0, 0.0), (0.25, 1.0, 1.0), max_translation=0.02, max_rotation=0.1)
    robot = PointRobot()
    res = run_episode(robot, Lunge(), "reach", max_steps=6, safety=SafetyFilter(limits), seed=0)
    assert res.safety_clamps == 6
    assert robot.pos[0] == pytest.approx(0.25)


def test_rigs_resolve_against_the_spec():
    spec = PointRobot().spec
    assert dict(resolve_rig("both", spec).cameras) == {"primary": "front", "wrist": "hand"}
    assert dict(resolve_rig({"primary": "hand"}, spec).cameras) == {"primary": "hand"}
    with pytest.raises(UnknownRigError, match="did you mean"):
        resolve_rig("eye_in_hnd", spec)
    with pytest.raises(MissingCameraError, match="lacks"):
        resolve_rig({"primary": "ceiling"}, spec)
    with pytest.raises(UnknownRigError, match="roles"):
        resolve_rig({"left_eye": "front"}, spec)
    obs = PointRobot().reset(0)
    with pytest.raises(MissingCameraError, match="needed by rig"):
        apply_rig(Observation({"front": obs.images["front"]}, None, 0.0), resolve_rig("both", spec))


def test_spec_rejects_contradictions():
    with pytest.raises(SpecError, match="entries"):
        EmbodimentSpec("x", 5.0, (0.0,), (1.0,), (), ("x",))
    with pytest.raises(SpecError, match="role"):
        CameraSpec("c", "overhead", 8, 8)
    with pytest.raises(SpecError, match="control_hz"):
        EmbodimentSpec("x", 0.0, (0.0,) * 7, (1.0,) * 7, (), ("x",))
