"""The RT-H motion labeller on hand-made action arrays: words, magnitude order, windows, errors."""
from __future__ import annotations

import numpy as np
import pytest

from vla.data.registry import RegistryError, load_registry, parse_entry
from vla.rth.errors import MotionError, MotionSpecError
from vla.rth.motions import (STOP, MotionSource, MotionSpec, check_motion, label_motions, motion_axes,
                             motion_values)

SPEC = MotionSpec.absolute([0.01, 0.01, 0.01, 0.05, 0.05, 0.05, 0.5], window=3)


def _actions(steps: int, **axes: float) -> np.ndarray:
    """Standardized actions, gripper open, with a constant value on the named axes."""
    a = np.zeros((steps, 7), np.float32)
    a[:, 6] = 1.0
    for i, name in enumerate(("x", "y", "z", "roll", "pitch", "yaw")):
        a[:, i] = axes.get(name, 0.0)
    return a


def test_plus_x_is_move_arm_forward():
    assert label_motions(_actions(5, x=0.02), SPEC) == ["move arm forward"] * 5


def test_each_axis_and_sign_has_its_words():
    assert label_motions(_actions(2, y=-0.02), SPEC)[0] == "move arm right"
    assert label_motions(_actions(2, z=0.02), SPEC)[0] == "move arm up"
    assert label_motions(_actions(2, yaw=0.1), SPEC)[0] == "rotate arm left"
    assert label_motions(_actions(2, pitch=-0.1), SPEC)[0] == "tilt arm up"


def test_forward_while_closing_gripper_joins_by_magnitude():
    a = _actions(6, x=0.03)  # 3 thresholds of forward motion
    a[2:, 6] = 0.0  # the gripper closes at step 2: a change of 1.0 = 2 thresholds
    motions = label_motions(a, SPEC)
    assert motions[0] == "move arm forward and close gripper"  # window 0..2 sees the close
    assert motions[2] == "move arm forward and close gripper"  # step 2 itself closes
    assert motions[3] == "move arm forward"  # closed and staying closed: no gripper word
    stronger = a.copy()
    stronger[:, 0] = 0.015  # 1.5 thresholds: now the gripper leads
    assert label_motions(stronger, SPEC)[1] == "close gripper and move arm forward"


def test_sub_threshold_noise_is_stop():
    rng = np.random.default_rng(0)
    a = _actions(50)
    a[:, :6] = rng.uniform(-0.004, 0.004, (50, 6))
    a[:, 6] = 1.0 - rng.uniform(0, 0.2, 50)  # gripper jitter below its 0.5 threshold
    assert label_motions(a, SPEC) == [STOP] * 50


def test_window_averages_the_coming_steps():
    a = _actions(6)
    a[3, 0] = 0.024  # one forward step: window mean 0.008 < 0.01 with W=3, 0.024 with W=1
    assert label_motions(a, SPEC)[1:4] == [STOP, STOP, STOP]
    one = MotionSpec.absolute(SPEC.thresholds, window=1)
    assert label_motions(a, one)[3] == "move arm forward" and label_motions(a, one)[2] == STOP
    vals = motion_values(a, 3)
    assert vals[3, 0] == pytest.approx(0.024 / 3) and vals[5, 0] == 0.0  # truncated windows at the end


def test_proprio_poses_label_their_change():
    poses = np.zeros((5, 7))
    poses[:, 2] = np.arange(5) * -0.02  # going down 2 cm a step
    poses[:, 5] = np.pi - 0.01 + np.arange(5) * 0.15  # yaw crossing +pi: wrapped, a small left turn
    poses[:, 5] = (poses[:, 5] + np.pi) % (2 * np.pi) - np.pi
    poses[:, 6] = 1.0
    spec = MotionSpec.absolute(SPEC.thresholds, window=1, source=MotionSource.PROPRIO)
    motions = label_motions(poses, spec)
    assert motions[:4] == ["rotate arm left and move arm down"] * 4
    assert motions[4] == STOP  # the last pose has no next one


def test_relative_thresholds_scale_with_the_statistics():
    q99 = np.array([0.02, 0.02, 0.02, 0.2, 0.2, 0.2, 1.0])
    spec = MotionSpec.relative(-q99, q99, fraction=0.5)
    np.testing.assert_allclose(spec.thresholds, [0.01, 0.01, 0.01, 0.1, 0.1, 0.1, 1.0])  # gripper: range -1..1
    flat = MotionSpec.relative([-0.02, 0, 0, 0, 0, 0, 0], [0.02, 0, 0, 0, 0, 0, 1], fraction=0.5)
    assert flat.thresholds[3] == pytest.approx(0.01)  # a never-moving axis takes the smallest spread


def test_motion_axes_reads_words_back():
    assert motion_axes("move arm forward and close gripper") == {
        "x": 1, "y": 0, "z": 0, "roll": 0, "pitch": 0, "yaw": 0, "gripper": -1}
    assert motion_axes(STOP) == dict.fromkeys(("x", "y", "z", "roll", "pitch", "yaw", "gripper"), 0)
    assert motion_axes("wiggle a bit") is None  # out of vocabulary


@pytest.mark.parametrize("kwargs, match", [
    ({"thresholds": 0.0}, "thresholds must be finite and > 0"),
    ({"thresholds": -1.0}, "> 0"),
    ({"thresholds": 0.01, "window": 0}, "window must be an integer >= 1"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(MotionSpecError, match=match):
        MotionSpec.absolute(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(MotionSpecError, match="fraction must be > 0"):
        MotionSpec.relative(np.zeros(7), np.ones(7), fraction=0)
    with pytest.raises(MotionSpecError, match=r"\[T>=1, 7\]"):
        label_motions(np.zeros((4, 26)), SPEC)
    with pytest.raises(MotionSpecError, match="NaN"):
        label_motions(np.full((2, 7), np.nan), SPEC)
    with pytest.raises(MotionSpecError, match="unknown axes"):
        MotionSpec.absolute(0.01, words={"elbow": ("bend", "stretch")})
    with pytest.raises(MotionError, match="empty"):
        check_motion("  ")


def test_registry_motion_words_override_the_defaults():
    table = dict(load_registry().get("bridge_dataset").raw)
    table["motion_words"] = {"y": ["move arm left", "move arm right"]}  # a frame with y to the right
    entry = parse_entry("mirrored", table)
    spec = MotionSpec.absolute(SPEC.thresholds, words=entry.motion_words)
    assert label_motions(_actions(2, y=0.02), spec)[0] == "move arm right"
    table["motion_words"] = {"elbow": ["bend", "stretch"]}
    with pytest.raises(RegistryError, match="not one of"):
        parse_entry("bad", table)
