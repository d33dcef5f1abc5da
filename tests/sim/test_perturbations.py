"""The eye-in-hand OOD conditions on real MuJoCo renders: each changes only what it claims."""
from __future__ import annotations

import numpy as np
import pytest
from frame_checks import mean_pixel_difference as _differs

import sim
from robot import Rig
from sim.config import CameraShift, SceneOptions
from sim.errors import SceneOptionError
from sim.perturbations import CONDITIONS, SHIFT_CONDITIONS, check_camera_shift, get_condition

SIZE = 48
SEED = 21
ACTIONS = [np.array([0.03, 0.02, -0.03, 0, 0, 0.1, 1.0]), np.array([0.0, -0.02, -0.02, 0, 0, 0, 0.5])]


def _rollout(condition: str) -> dict:
    """Reset with SEED, apply ACTIONS; frames and privileged state at the end."""
    scene = sim.make("widowx-block-in-bowl", seed=0, image_size=SIZE, **get_condition(condition).scene_kwargs())
    try:
        scene.reset(seed=SEED)
        for a in ACTIONS:
            obs = scene.act(a).observation
        m = scene.model
        return {"images": obs.images, "qpos": scene.data.qpos.copy(), "bowl": scene.bowl_pos,
                "cam": (m.cam_pos.copy(), m.cam_quat.copy()), "matid": m.geom_matid.copy(),
                "distractors": scene.data.mocap_pos[scene._distractors].copy()}
    finally:
        scene.close()


@pytest.fixture(scope="module")
def rollouts() -> dict[str, dict]:
    return {name: _rollout(name) for name in CONDITIONS}


def test_the_benchmark_conditions_are_the_issue_levels():
    shifts = [get_condition(n).camera_shift for n in SHIFT_CONDITIONS]
    assert [(s.distance_m, s.angle_deg) for s in shifts] == [(0.02, 5.0), (0.05, 10.0), (0.10, 15.0)]
    assert get_condition("id") == sim.perturbations.Condition()
    with pytest.raises(SceneOptionError, match="shift_1"):
        get_condition("shift_9")


def test_same_state_under_every_condition(rollouts):
    base = rollouts["id"]
    for name, r in rollouts.items():
        # distractors sit on their own mocap bodies; the arm and block follow the same physics
        np.testing.assert_allclose(r["qpos"], base["qpos"], atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(r["bowl"], base["bowl"], err_msg=name)


def test_camera_shift_changes_only_the_third_person_frames(rollouts):
    base = rollouts["id"]
    for name in SHIFT_CONDITIONS:
        r = rollouts[name]
        np.testing.assert_array_equal(r["images"]["wrist"], base["images"]["wrist"], err_msg=name)
        assert _differs(r["images"]["shoulder"], base["images"]["shoulder"]) > 1.0, name
        np.testing.assert_array_equal(r["matid"], base["matid"])
    # the largest shift moves the picture more than the smallest
    assert (_differs(rollouts["shift_3"]["images"]["shoulder"], base["images"]["shoulder"])
            > _differs(rollouts["shift_1"]["images"]["shoulder"], base["images"]["shoulder"]))


def test_texture_changes_the_table_and_nothing_else(rollouts):
    base, r = rollouts["id"], rollouts["texture"]
    changed = np.flatnonzero(r["matid"] != base["matid"])
    assert len(changed) == 1  # the table geom only
    for pose, pose0 in zip(r["cam"], base["cam"]):
        np.testing.assert_array_equal(pose, pose0)
    for cam in ("shoulder", "wrist"):  # both cameras see the table
        assert _differs(r["images"][cam], base["images"][cam]) > 1.0, cam


def test_distractors_appear_on_the_table_and_nothing_else_moves(rollouts):
    base, r = rollouts["id"], rollouts["distractors"]
    on_table = [p for p in r["distractors"] if np.all(np.abs(p[:2] - [0.25, 0.0]) < [0.45, 0.55])]
    assert len(on_table) == 3 and not any(np.all(np.abs(p[:2]) < 1) for p in base["distractors"])
    np.testing.assert_array_equal(r["matid"], base["matid"])
    for pose, pose0 in zip(r["cam"], base["cam"]):
        np.testing.assert_array_equal(pose, pose0)
    assert _differs(r["images"]["shoulder"], base["images"]["shoulder"]) > 0.1


@pytest.mark.parametrize("rig", ["eye_in_hand", Rig("hand", {"wrist": "wrist"}), {"wrist": "wrist"}])
def test_a_shift_without_a_third_person_camera_is_refused(rig):
    with pytest.raises(SceneOptionError, match="third-person"):
        SceneOptions(rig=rig, camera_shift=CameraShift(0.02, 5))
    SceneOptions(rig=rig)  # without a shift the rig is fine
    check_camera_shift("both", CameraShift(0.02, 5))
