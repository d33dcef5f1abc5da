"""The WidowX tabletop scene: real MuJoCo physics and offscreen rendering."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import sim
from robot import Robot, UnsafeActionError, run_episode
from sim.config import CameraShift
from sim.errors import RenderBackendError, SceneOptionError, UnknownExpertError, UnknownTaskError

SIZE = 64


@pytest.fixture(scope="module")
def bowl_scene():
    scene = sim.make("widowx-block-in-bowl", seed=0, image_size=SIZE)
    yield scene
    scene.close()


def test_scene_is_a_robot_with_both_cameras(bowl_scene):
    assert isinstance(bowl_scene, Robot)
    assert [(c.name, c.role) for c in bowl_scene.spec.cameras] == [("shoulder", "primary"), ("wrist", "wrist")]
    assert bowl_scene.spec.control_hz == 5.0 and bowl_scene.spec.action_dim == 7


def test_reset_is_deterministic_per_seed(bowl_scene):
    a = bowl_scene.reset(seed=11)
    block_a = bowl_scene.block_pos
    b = bowl_scene.reset(seed=11)
    np.testing.assert_array_equal(block_a, bowl_scene.block_pos)
    np.testing.assert_array_equal(a.proprio, b.proprio)
    for name in a.images:
        np.testing.assert_array_equal(a.images[name], b.images[name])
    bowl_scene.reset(seed=12)
    assert not np.allclose(block_a, bowl_scene.block_pos)


def test_steps_are_deterministic(bowl_scene):
    actions = [np.array([0.02, 0.01, -0.02, 0, 0, 0.1, g]) for g in (1.0, 0.0, 0.5)]
    runs = []
    for _ in range(2):
        bowl_scene.reset(seed=5)
        runs.append([bowl_scene.act(a).observation.proprio for a in actions])
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))


def test_action_moves_the_end_effector_by_the_delta(bowl_scene):
    obs = bowl_scene.reset(seed=1)
    step = bowl_scene.act(np.array([0.03, -0.02, -0.03, 0, 0, 0, 1.0]))
    moved = step.observation.proprio[:3] - obs.proprio[:3]
    np.testing.assert_allclose(moved, [0.03, -0.02, -0.03], atol=0.004)
    assert not step.info["clamped"]


def test_frames_are_not_blank_and_cameras_differ(bowl_scene):
    obs = bowl_scene.reset(seed=2)
    shoulder, wrist = obs.images["shoulder"], obs.images["wrist"]
    assert shoulder.shape == wrist.shape == (SIZE, SIZE, 3) and shoulder.dtype == np.uint8
    assert shoulder.std() > 10 and wrist.std() > 10 and shoulder.flags.writeable
    assert np.abs(shoulder.astype(int) - wrist.astype(int)).mean() > 10
    red = (shoulder[..., 0] > 150) & (shoulder[..., 1] < 60)  # the block is visible
    assert red.sum() > 3


@pytest.mark.parametrize("bad", [np.zeros(6), np.full(7, np.nan), np.zeros((7, 1))])
def test_bad_action_raises_and_does_not_move(bowl_scene, bad):
    bowl_scene.reset(seed=3)
    before = bowl_scene.data.qpos.copy()
    with pytest.raises(UnsafeActionError, match="not moved"):
        bowl_scene.act(bad)
    np.testing.assert_array_equal(before, bowl_scene.data.qpos)


def test_out_of_workspace_action_is_clamped_and_reported(bowl_scene):
    bowl_scene.reset(seed=3)
    step = bowl_scene.act(np.array([0.0, 0.0, -0.05, 0, 0, 0, 1.0]))
    step = bowl_scene.act(np.array([0.0, 0.0, -0.05, 0, 0, 0, 1.0]))
    step = bowl_scene.act(np.array([0.0, 0.0, -0.05, 0, 0, 0, 1.0]))
    assert step.info["clamped"] and step.info["safety"].clamps[0].limit == "workspace"
    assert step.observation.proprio[2] > 0.015


@pytest.mark.parametrize("task", ["widowx-block-in-bowl", "widowx-push-left", "widowx-pick-block"])
def test_scripted_expert_succeeds(task):
    cfg = sim.get_task(task)
    scene = cfg.make(seed=0, options=sim.SceneOptions(rig="third_person", image_size=32))
    try:
        results = [
            run_episode(scene, cfg.expert(scene, "expert", seed), cfg.instruction, cfg.max_steps, seed=100 + seed)
            for seed in range(3)
        ]
    finally:
        scene.close()
    assert all(r.success for r in results), [(r.reason, r.steps) for r in results]
    assert all(set(r.frames[0]) == {"primary"} for r in results)


def test_idle_robot_does_not_succeed_and_renders_nothing_when_asked():
    cfg = sim.get_task("widowx-pick-block")
    scene = cfg.make(seed=0, options=sim.SceneOptions(render_images=False))
    obs = scene.reset(seed=0)
    assert obs.images == {} and scene.spec.cameras == ()
    for _ in range(5):
        step = scene.act(np.array([0, 0, 0, 0, 0, 0, 1.0]))
        assert not step.success and step.reward == 0.0
    scene.close()


def test_camera_shift_moves_only_the_third_person_view():
    plain = sim.make("widowx-pick-block", seed=0, image_size=SIZE)
    shifted = sim.make("widowx-pick-block", seed=0, image_size=SIZE, camera_shift=CameraShift(0.05, 10))
    try:
        a, b = plain.reset(seed=4), shifted.reset(seed=4)
        np.testing.assert_array_equal(a.images["wrist"], b.images["wrist"])
        assert np.abs(a.images["shoulder"].astype(int) - b.images["shoulder"].astype(int)).mean() > 2
        np.testing.assert_array_equal(plain.block_pos, shifted.block_pos)
        c = shifted.reset(seed=5)  # another seed, another shift direction
        assert not np.array_equal(c.images["shoulder"], b.images["shoulder"])
    finally:
        plain.close()
        shifted.close()


def test_texture_and_distractors_change_what_they_claim():
    base = sim.make("widowx-block-in-bowl", seed=0, image_size=SIZE, rig="third_person")
    tex = sim.make("widowx-block-in-bowl", seed=0, image_size=SIZE, rig="third_person", table_texture="checker")
    dis = sim.make("widowx-block-in-bowl", seed=0, image_size=SIZE, rig="third_person", distractors=3)
    try:
        a, b, c = (s.reset(seed=9).images["shoulder"] for s in (base, tex, dis))
        assert not np.array_equal(a, b) and not np.array_equal(a, c)
        np.testing.assert_array_equal(base.block_pos, tex.block_pos)
        np.testing.assert_array_equal(base.bowl_pos, dis.bowl_pos)
        on_table = [p for p in dis.data.mocap_pos[dis._distractors] if abs(p[0]) < 1]
        assert len(on_table) == 3
    finally:
        for s in (base, tex, dis):
            s.close()


def test_bad_options_raise():
    with pytest.raises(UnknownTaskError, match="widowx-pick-block"):
        sim.make("widowx-pick-blok")
    with pytest.raises(SceneOptionError, match="textures"):
        sim.make("widowx-pick-block", table_texture="marble")
    with pytest.raises(SceneOptionError, match="distractors"):
        sim.make("widowx-pick-block", distractors=9)
    with pytest.raises(SceneOptionError, match="METRES,DEGREES"):
        CameraShift.parse("5cm")
    scene = sim.make("widowx-pick-block", rig="third_person", image_size=32)
    with pytest.raises(UnknownExpertError, match="variants"):
        sim.get_task("widowx-pick-block").expert(scene, "perfect", 0)
    scene.close()


def test_unusable_gl_backend_names_the_fix(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "glx")
    with pytest.raises(RenderBackendError, match="one of \\['egl', 'osmesa'\\]"):
        sim.make("widowx-pick-block", image_size=32)


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: 10-35 s on 2 busy cores
def test_rendering_survives_tensorflow_in_the_same_process():
    # Mesa's LLVM and TensorFlow's crash each other when both live in one process (either order);
    # the scene renders in a child process, so this script must exit cleanly.
    script = (
        "import sim, numpy as np\n"
        "s = sim.make('widowx-pick-block', image_size=32)\n"
        "a = s.reset(seed=1).images['shoulder']\n"
        "import tensorflow as tf\n"
        "b = s.reset(seed=1).images['shoulder']\n"
        "assert np.array_equal(a, b) and int(tf.constant(2) + 1) == 3\n"
        "s.close(); print('rendered-with-tf')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "rendered-with-tf" in proc.stdout, proc.stderr[-2000:]


def test_a_broken_egl_falls_back_to_osmesa(monkeypatch):
    import os

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl_vendor.json")  # glvnd finds no EGL
    scene = sim.make("widowx-pick-block", image_size=32, rig="third_person")
    try:
        assert os.environ["MUJOCO_GL"] == "osmesa"
        assert scene.reset(seed=0).images["shoulder"].std() > 10
    finally:
        scene.close()


def test_success_conditions_hold_only_for_the_goal_state(bowl_scene):
    import mujoco

    scene = bowl_scene
    scene.reset(seed=21)
    adr = scene._block_qpos

    def place(xyz):
        scene.data.qpos[adr : adr + 3] = xyz
        scene.data.qvel[:] = 0
        mujoco.mj_forward(scene.model, scene.data)

    assert not scene.success()  # objects start apart
    bowl = scene.bowl_pos
    place((bowl[0], bowl[1], 0.08))  # above the bowl, not in it
    assert not scene.success()
    place((bowl[0] + 0.01, bowl[1], 0.02))  # resting inside
    assert scene.success()
    place((bowl[0] + 0.07, bowl[1], 0.015))  # beside the bowl
    assert not scene.success()


def test_custom_rig_renders_only_its_cameras():
    scene = sim.make("widowx-pick-block", image_size=32, rig={"primary": "wrist"})
    try:
        assert [c.name for c in scene.spec.cameras] == ["wrist"]
        obs = scene.reset(seed=0)
        assert set(obs.images) == {"wrist"}

        class Still:
            def act(self, obs, instruction):
                assert set(obs.images) == {"primary"}
                return np.array([0, 0, 0, 0, 0, 0, 1.0])

        res = run_episode(scene, Still(), "look", 2, rig={"primary": "wrist"}, seed=0)
        np.testing.assert_array_equal(res.frames[0]["primary"], obs.images["wrist"])
    finally:
        scene.close()
