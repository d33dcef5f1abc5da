"""robosuite Panda scenes: real robosuite physics, real offscreen rendering (small images)."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import sim
from robot import Robot, UnsafeActionError
from sim.config import CameraShift, SceneOptions
from sim.errors import SceneOptionError
from sim.robosuite_scenes import THIRD_PERSON_CAMERA, WRIST_CAMERA, RobosuiteScene
from sim.robosuite_tasks import PlacementRange, RobosuiteTask

SIZE = 64
HOLD = np.array([0, 0, 0, 0, 0, 0, 1.0])  # stay put, gripper open


@pytest.fixture(scope="module")
def lift():
    scene = sim.make("lift", seed=0, image_size=SIZE)
    yield scene
    scene.close()


def test_tasks_are_registered_with_instructions_and_listing_skips_robosuite():
    expected = {
        "lift": "lift the red cube",
        "stack": "stack the red cube on the green cube",
        "pick-place-can": "pick up the can and put it in its bin",
    }
    for name, instruction in expected.items():
        assert sim.get_task(name).instruction == instruction
    code = "import sys, sim; print(sorted(m for m in ('robosuite', 'mujoco') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_scene_is_a_robot_with_named_cameras(lift):
    assert isinstance(lift, Robot)
    assert [(c.name, c.role) for c in lift.spec.cameras] == [(THIRD_PERSON_CAMERA, "primary"), (WRIST_CAMERA, "wrist")]
    obs = lift.reset(seed=1)
    assert set(obs.images) == {THIRD_PERSON_CAMERA, WRIST_CAMERA}
    for image in obs.images.values():
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert obs.proprio.shape == (len(lift.spec.proprio_names),) and obs.proprio.dtype == np.float32
    np.testing.assert_allclose(obs.proprio[:3], lift.eef_pose()[0], atol=1e-6)


def test_reset_and_steps_are_deterministic_for_a_seed(lift):
    def rollout(seed: int):
        obs = [lift.reset(seed=seed)]
        for dz in (-0.02, -0.02, 0.01):
            obs.append(lift.act(np.array([0.01, -0.005, dz, 0, 0, 0.05, 0.5])).observation)
        return obs, lift.body_pose("cube_main")[0]

    first, cube_a = rollout(7)
    second, cube_b = rollout(7)
    np.testing.assert_array_equal(cube_a, cube_b)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.proprio, b.proprio)
        for name in a.images:
            np.testing.assert_array_equal(a.images[name], b.images[name])
    lift.reset(seed=8)
    assert not np.allclose(cube_a, lift.body_pose("cube_main")[0], atol=1e-4)


def test_frames_are_upright_not_blank_and_differ_between_cameras(lift):
    obs = lift.reset(seed=2)
    third, wrist = obs.images[THIRD_PERSON_CAMERA].astype(float), obs.images[WRIST_CAMERA].astype(float)
    assert third.std() > 10 and wrist.std() > 10
    assert np.abs(third - wrist).mean() > 10
    # the wrist camera sees the open fingers (dark) at the bottom and the table (bright) above them
    assert wrist[-SIZE // 8 :].mean() < wrist[: SIZE // 2].mean() - 40


def test_actions_follow_the_shared_convention(lift):
    lift.reset(seed=3)
    start, start_rot = lift.eef_pose()
    fingers_open = abs(lift.observe().proprio[6])
    for _ in range(4):
        result = lift.act(np.array([0.02, 0.0, 0.02, 0.0, 0.0, 0.1, 0.0]))
    pos, rot = lift.eef_pose()
    assert pos[0] - start[0] > 0.02 and pos[2] - start[2] > 0.02  # +x forward, +z up (base frame)
    assert abs(pos[1] - start[1]) < 0.01
    turned = (rot * start_rot.inv()).as_euler("xyz")
    assert turned[2] > 0.1  # +dyaw turns about the base's z axis
    assert abs(result.observation.proprio[6]) < fingers_open - 0.005  # gripper 0 = close
    assert result.success is False and result.done is False and not result.info["clamped"]


def test_bad_actions_raise_before_moving(lift):
    lift.reset(seed=4)
    before = lift.observe().proprio
    for bad in (np.zeros(6), np.array([np.nan, 0, 0, 0, 0, 0, 1.0]), np.array(["a"] * 7)):
        with pytest.raises(UnsafeActionError):
            lift.act(bad)
    np.testing.assert_array_equal(before, lift.observe().proprio)
    assert lift.steps == 0


def test_out_of_bounds_actions_are_clamped_and_reported(lift):
    lift.reset(seed=5)
    result = lift.act(np.array([0.2, 0, 0, 0, 0, 0, 1.5]))
    clamps = {(c.limit, c.index, c.applied) for c in result.info["safety"].clamps}
    assert ("translation", 0, 0.05) in clamps and ("gripper", 6, 1.0) in clamps


def test_reset_before_use_is_required():
    scene = sim.make("lift", seed=0, rig="third_person", image_size=SIZE)
    try:
        assert [c.name for c in scene.spec.cameras] == [THIRD_PERSON_CAMERA]
        with pytest.raises(UnsafeActionError, match="reset"):
            scene.act(HOLD)
        assert set(scene.reset(seed=0).images) == {THIRD_PERSON_CAMERA}
    finally:
        scene.close()


def test_camera_shift_moves_only_the_third_person_view(lift):
    shift = CameraShift(distance_m=0.05, angle_deg=10.0)
    shifted = sim.make("lift", seed=0, image_size=SIZE, camera_shift=shift)
    try:
        base, moved = lift.reset(seed=9), shifted.reset(seed=9)
        np.testing.assert_array_equal(base.images[WRIST_CAMERA], moved.images[WRIST_CAMERA])
        assert np.abs(base.images[THIRD_PERSON_CAMERA].astype(float) - moved.images[THIRD_PERSON_CAMERA]).mean() > 3
        (p0, q0), (p1, q1) = lift.camera_pose(), shifted.camera_pose()
        assert np.linalg.norm(p1 - p0) == pytest.approx(0.05, abs=1e-9)
        turn = Rotation.from_quat(q1, scalar_first=True) * Rotation.from_quat(q0, scalar_first=True).inv()
        assert math.degrees(turn.magnitude()) == pytest.approx(10.0, abs=1e-6)
        # the direction comes from the episode seed
        shifted.reset(seed=10)
        assert not np.allclose(shifted.camera_pose()[0], p1)
    finally:
        shifted.close()


def test_placement_ranges_are_honoured():
    task = RobosuiteTask(
        env_name="Lift", description="t", instruction="lift the red cube", grasp_body="cube_main",
        placement=PlacementRange(x=(0.05, 0.06), y=(-0.10, -0.09), rotation=(0.0, 0.0)),
    )
    scene = task.make(seed=0, options=SceneOptions(render_images=False))
    try:
        assert scene.spec.cameras == () and scene.reset(seed=1).images == {}
        for seed in range(3):
            scene.reset(seed=seed)
            pos, rot = scene.body_pose("cube_main")
            table_centre, _ = scene.to_base(np.array([0.0, 0.0, 0.8]), Rotation.identity())
            rel = pos - table_centre
            assert 0.05 - 1e-6 <= rel[0] <= 0.06 + 1e-6 and -0.10 - 1e-6 <= rel[1] <= -0.09 + 1e-6
            assert abs(rot.as_euler("xyz")[2]) < 1e-3
    finally:
        scene.close()


def test_unsupported_options_and_ranges_raise():
    with pytest.raises(SceneOptionError, match="low <= high"):
        PlacementRange(x=(0.1, -0.1), y=(0.0, 0.0))
    with pytest.raises(SceneOptionError, match="sampler"):
        RobosuiteScene(
            RobosuiteTask("Lift", "t", "i", "cube_main", PlacementRange((0, 0), (0, 0)), sampler="NoSuchSampler"),
            SceneOptions(render_images=False),
        )
