"""Eye-in-hand OOD conditions on the robosuite scenes: real robosuite physics, real offscreen renders."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from frame_checks import mean_pixel_difference as _differs
from scipy.spatial.transform import Rotation

import sim
from robot import Observation
from sim.config import SceneOptions
from sim.errors import SceneOptionError
from sim.evaluate import EvalConfig, evaluate
from sim.perturbations import OOD_DISTRACTORS, get_condition, shifted_camera_pose
from sim.robosuite_scenes import DISTRACTOR_CLEARANCE, THIRD_PERSON_CAMERA, WRIST_CAMERA
from sim.robosuite_tasks import PlacementRange, RobosuiteTask

SIZE = 48
SEED = 21
CONDITIONS = ("id", "shift_1", "shift_3", "texture", "distractors")
ACTIONS = [np.array([0.03, 0.02, -0.03, 0, 0, 0.1, 1.0]), np.array([0.0, -0.02, -0.02, 0, 0, 0, 0.5])]


def _rollout(condition: str) -> dict:
    """Lift: reset with SEED, apply ACTIONS; frames and privileged state at the end."""
    scene = sim.make("lift", seed=0, image_size=SIZE, **get_condition(condition).scene_kwargs())
    try:
        scene.reset(seed=SEED)
        cube_start = scene.body_pose("cube_main")[0]
        for a in ACTIONS:
            obs = scene.act(a).observation
        m = scene.model
        return {"images": obs.images, "proprio": obs.proprio, "cube": scene.body_pose("cube_main")[0],
                "cam": scene.camera_pose(), "matid": m.geom_matid.copy(), "nbody": m.nbody,
                "materials": [m.material(i).name if i >= 0 else None for i in m.geom_matid],
                "distractors": scene.distractor_positions(), "cube_start": cube_start,
                "distractors_base": [scene.to_base(p, Rotation.identity())[0] for p in scene.distractor_positions()]}
    finally:
        scene.close()


@pytest.fixture(scope="module")
def rollouts() -> dict[str, dict]:
    return {name: _rollout(name) for name in CONDITIONS}


def test_same_state_under_every_condition(rollouts):
    base = rollouts["id"]
    for name, r in rollouts.items():
        np.testing.assert_array_equal(r["proprio"], base["proprio"], err_msg=name)
        np.testing.assert_array_equal(r["cube"], base["cube"], err_msg=name)


def test_camera_shift_moves_the_agentview_and_never_the_wrist_camera(rollouts):
    base = rollouts["id"]
    for name in ("shift_1", "shift_3"):
        r, shift = rollouts[name], get_condition(name).camera_shift
        np.testing.assert_array_equal(r["images"][WRIST_CAMERA], base["images"][WRIST_CAMERA], err_msg=name)
        assert _differs(r["images"][THIRD_PERSON_CAMERA], base["images"][THIRD_PERSON_CAMERA]) > 1.0, name
        (p0, q0), (p1, q1) = base["cam"], r["cam"]
        assert np.linalg.norm(p1 - p0) == pytest.approx(shift.distance_m, abs=1e-9)
        turn = Rotation.from_quat(q1, scalar_first=True) * Rotation.from_quat(q0, scalar_first=True).inv()
        assert math.degrees(turn.magnitude()) == pytest.approx(shift.angle_deg, abs=1e-6)
        # the pose math every scene shares (the WidowX shoulder camera moves the same way for a seed)
        expected = shifted_camera_pose(p0, q0, shift, SEED)
        np.testing.assert_array_equal(p1, expected[0])
        np.testing.assert_array_equal(q1, expected[1])
        np.testing.assert_array_equal(r["matid"], base["matid"])
    assert (_differs(rollouts["shift_3"]["images"][THIRD_PERSON_CAMERA], base["images"][THIRD_PERSON_CAMERA])
            > _differs(rollouts["shift_1"]["images"][THIRD_PERSON_CAMERA], base["images"][THIRD_PERSON_CAMERA]))


def test_texture_changes_the_table_and_nothing_else(rollouts):
    base, r = rollouts["id"], rollouts["texture"]
    changed = np.flatnonzero(r["matid"] != base["matid"])
    assert len(changed) >= 1
    assert {base["materials"][i] for i in changed} == {"table_ceramic"}  # robosuite's table top, nothing else
    assert {r["materials"][i] for i in changed} == {"vla/table/checker"}
    for pose, pose0 in zip(r["cam"], base["cam"]):
        np.testing.assert_array_equal(pose, pose0)
    for cam in (THIRD_PERSON_CAMERA, WRIST_CAMERA):  # both cameras see the table
        assert _differs(r["images"][cam], base["images"][cam]) > 5.0, cam


def test_distractors_stand_on_the_table_clear_of_the_cube(rollouts):
    base, r = rollouts["id"], rollouts["distractors"]
    assert base["nbody"] + OOD_DISTRACTORS == r["nbody"] and len(base["distractors"]) == 0
    area = sim.get_task("lift").distractor_area
    for (x, y, z), in_base in zip(r["distractors"], r["distractors_base"]):
        assert area.x[0] <= x <= area.x[1] and area.y[0] <= y <= area.y[1] and z == area.z
        assert np.linalg.norm(in_base[:2] - r["cube_start"][:2]) >= DISTRACTOR_CLEARANCE
    np.testing.assert_array_equal(r["matid"][: len(base["matid"])], base["matid"])
    for pose, pose0 in zip(r["cam"], base["cam"]):
        np.testing.assert_array_equal(pose, pose0)
    for cam in (THIRD_PERSON_CAMERA, WRIST_CAMERA):
        assert _differs(r["images"][cam], base["images"][cam]) > 0.1, cam


def _expert_succeeds(name: str, options: SceneOptions, seed: int) -> bool:
    task = sim.get_task(name)
    scene = task.make(seed=0, options=options)
    try:
        expert, obs = task.expert(scene, seed=0), scene.reset(seed=seed)
        for _ in range(task.max_steps):
            result = scene.act(expert.act(obs, task.instruction))
            if result.success:
                return True
            obs = result.observation
        return False
    finally:
        scene.close()


def test_the_lift_expert_still_succeeds_among_distractors():
    # the expert reads privileged state, so rendering is skipped (most of a step's cost)
    assert _expert_succeeds("lift", SceneOptions(render_images=False, distractors=OOD_DISTRACTORS), seed=SEED)


def test_pick_place_can_textures_its_bins_and_puts_distractors_in_the_source_bin():
    task = sim.get_task("pick-place-can")
    scene = task.make(seed=0, options=SceneOptions(render_images=False, table_texture="speckle", distractors=2))
    try:
        scene.reset(seed=SEED)
        m = scene.model
        names = {m.material(i).name for i in m.geom_matid if i >= 0}
        assert "vla/table/speckle" in names and not names & {"light-wood", "dark-wood"}
        area, can = task.distractor_area, scene.body_pose("Can_main")[0]
        for p in scene.distractor_positions():
            assert area.x[0] <= p[0] <= area.x[1] and area.y[0] <= p[1] <= area.y[1]
            assert np.linalg.norm(scene.to_base(p, Rotation.identity())[0][:2] - can[:2]) >= DISTRACTOR_CLEARANCE
        assert not scene.success()
    finally:
        scene.close()


def test_what_a_scene_cannot_show_is_refused_with_the_fix():
    with pytest.raises(SceneOptionError, match="texture 'marble' is unknown; textures"):
        sim.make("lift", table_texture="marble")
    with pytest.raises(SceneOptionError, match="3 distractors; asked for 4"):
        sim.make("stack", distractors=4)
    bare = RobosuiteTask("Lift", "t", "i", "cube_main", PlacementRange((0, 0), (0, 0)),
                         table_materials=(), distractor_area=None)
    with pytest.raises(SceneOptionError, match="no table surface to texture; leave table_texture unset"):
        bare.make(options=SceneOptions(render_images=False, table_texture="checker"))
    with pytest.raises(SceneOptionError, match="no table area for distractors; leave distractors 0"):
        bare.make(options=SceneOptions(render_images=False, distractors=1))
    wrong = RobosuiteTask("Lift", "t", "i", "cube_main", PlacementRange((0, 0), (0, 0)), table_materials=("marble",))
    with pytest.raises(SceneOptionError, match=r"table materials \('marble',\); fix table_materials"):
        wrong.make(options=SceneOptions(render_images=False, table_texture="checker"))
    with pytest.raises(SceneOptionError, match="third-person"):
        sim.make("lift", rig="eye_in_hand", camera_shift=get_condition("shift_1").camera_shift)


class _Hold:
    """A policy that keeps the arm still with the gripper open (the harness, not the policy, is tested)."""

    def act(self, obs: Observation, instruction: str) -> np.ndarray:
        assert set(obs.images) == {"primary", "wrist"}
        return np.array([0, 0, 0, 0, 0, 0, 1.0])


def test_sim_eval_runs_a_robosuite_task_under_perturbations_and_records_them(tmp_path):
    shift = get_condition("shift_2").camera_shift
    cfg = EvalConfig(task="lift", out=tmp_path, episodes=1, max_steps=2, rig="both", image_size=SIZE,
                     camera_shift=shift, table_texture="checker", distractors=2, video="none")
    evaluate(cfg, _Hold(), policy_name="hold")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["camera_shift"] == {"distance_m": shift.distance_m, "angle_deg": shift.angle_deg}
    assert summary["table_texture"] == "checker" and summary["distractors"] == 2
    assert summary["episodes"] == 1 and summary["per_episode"][0]["steps"] == 2
