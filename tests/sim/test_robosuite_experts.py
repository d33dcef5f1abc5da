"""Scripted robosuite experts: real physics, judged by robosuite's own success checks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sim
from robot import run_episode
from sim.config import SceneOptions
from sim.errors import UnknownExpertError
from sim.robosuite_scenes import MAX_ROTATION, MAX_TRANSLATION


@dataclasses.dataclass(frozen=True)
class Rollout:
    success: bool
    actions: list[np.ndarray]
    clamps: int


def _rollout(scene, expert, instruction: str, seed: int, max_steps: int, stop_on_success: bool = True) -> Rollout:
    """run_episode without cameras (it needs a rig): observe, act, stop at success."""
    obs, actions, clamps, success = scene.reset(seed=seed), [], 0, False
    for _ in range(max_steps):
        actions.append(expert.act(obs, instruction))
        result = scene.act(actions[-1])
        obs, success, clamps = result.observation, result.success, clamps + result.info["clamped"]
        if success and stop_on_success:
            break
    return Rollout(success, actions, clamps)


def _episode(name: str, seed: int, variant: str = "expert") -> Rollout:
    task = sim.get_task(name)
    # the experts read privileged state, so these tests skip rendering (most of a step's cost)
    scene = task.make(seed=0, options=SceneOptions(render_images=False))
    try:
        return _rollout(scene, task.expert(scene, variant, seed=0), task.instruction, seed, task.max_steps)
    finally:
        scene.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_lift_expert_lifts_the_cube(seed):
    result = _episode("lift", seed)
    assert result.success
    actions = np.stack(result.actions)
    assert np.all(np.abs(actions[:, :3]) <= MAX_TRANSLATION) and np.all(np.abs(actions[:, 3:6]) <= MAX_ROTATION)
    assert set(np.unique(actions[:, 6])) == {0.0, 1.0}  # it opened and closed the gripper
    assert result.clamps == 0


def test_lift_expert_succeeds_through_run_episode_with_rendering():
    task = sim.get_task("lift")
    scene = task.make(seed=0, options=SceneOptions(image_size=64))
    try:
        result = run_episode(scene, task.expert(scene, seed=0), task.instruction, task.max_steps, seed=2)
    finally:
        scene.close()
    assert result.success and result.reason == "success"
    assert len(result.frames) == result.steps + 1 and set(result.frames[0]) == {"primary", "wrist"}


def test_stack_expert_stacks_and_lets_go():
    assert _episode("stack", 0).success


def test_pick_place_can_expert_puts_the_can_in_its_bin():
    assert _episode("pick-place-can", 0).success


def test_noisy_expert_still_lifts_and_differs_from_the_clean_one():
    clean, noisy = _episode("lift", 3), _episode("lift", 3, "noisy")
    assert noisy.success
    assert not np.allclose(np.stack(clean.actions[:5]), np.stack(noisy.actions[:5]))


def test_suboptimal_expert_makes_one_seeded_mistake_per_episode():
    task = sim.get_task("lift")
    scene = task.make(seed=0, options=SceneOptions(render_images=False))
    try:
        clean, worse = task.expert(scene, "expert", seed=0), task.expert(scene, "suboptimal", seed=0)
        mistakes, gaps = {}, {}
        for seed in range(6):
            for name, expert in (("clean", clean), ("worse", worse)):
                obs = scene.reset(seed=seed)
                for _ in range(task.max_steps):  # until it closes the fingers
                    action = expert.act(obs, task.instruction)
                    if action[6] == 0.0:
                        break
                    obs = scene.act(action).observation
                cube, _ = scene.body_pose("cube_main")
                gaps[name, seed] = scene.eef_pose()[0] - cube
            mistakes[seed] = worse.mistake
        assert clean.mistake is None and len(set(mistakes.values())) >= 2
        for seed, mistake in mistakes.items():
            assert np.linalg.norm(gaps["clean", seed]) < 0.015
            if mistake == "off_centre":  # beside the cube
                assert np.linalg.norm(gaps["worse", seed][:2]) > 0.02
            elif mistake == "close_high":  # above it
                assert gaps["worse", seed][2] > 0.025
    finally:
        scene.close()


def test_unknown_variant_and_foreign_robot_raise():
    task = sim.get_task("lift")
    scene = task.make(seed=0, options=SceneOptions(render_images=False))
    try:
        with pytest.raises(UnknownExpertError, match="variants"):
            task.expert(scene, "perfect")
        with pytest.raises(UnknownExpertError, match="RobosuiteScene"):
            task.expert(object())
    finally:
        scene.close()
