"""RT-H training: motion swap makes the action query follow a motion the image never came with."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import vla
from vla.model.normalization import normalize_actions, statistics_from_arrays
from vla.rth.errors import MotionSpecError
from vla.rth.motions import MOTION_AXES, motion_axes
from vla.rth.query import predict_actions_given
from vla.rth.train import MotionPrototypes, TrainSettings, train_policy

from rth_fixtures import ACTIONS, COLOURS, MOTIONS, TASK, colour_episodes


def _stats(episodes):
    return statistics_from_arrays(np.concatenate([e.actions for e in episodes]), mask=[True] * 6 + [False])


def test_prototypes_are_each_motions_median_action_and_keep_the_frames_gripper():
    episodes = colour_episodes(6)
    stats = _stats(episodes)["action"]
    normalized = [normalize_actions(e.actions, stats) for e in episodes]
    protos = MotionPrototypes.of(episodes, normalized)
    assert set(protos.motions) == set(MOTIONS)
    up = protos.motions.index("move arm up")
    np.testing.assert_allclose(protos.actions[up], normalize_actions(ACTIONS[2:3], stats)[0], atol=1e-6)
    assert list(protos.moves_gripper) == [m == "move arm left and close gripper" for m in protos.motions]
    red = episodes[0]  # forward, gripper open
    rng = np.random.default_rng(0)
    swapped = [protos.swapped(red, 0, normalized[0], rng) for _ in range(20)]
    assert all(s.motion != red.motions[0] for s in swapped)  # always another motion
    for s in swapped:  # the gripper follows a gripper word, else stays as the frame had it
        expected = protos.actions[protos.motions.index(s.motion)][-1] if "gripper" in s.motion else normalized[0][0, -1]
        assert s.action[-1] == pytest.approx(expected)


def test_composed_swaps_combine_axis_words_at_each_words_typical_value():
    episodes = colour_episodes(6)
    stats = _stats(episodes)["action"]
    normalized = [normalize_actions(e.actions, stats) for e in episodes]
    protos = MotionPrototypes.of(episodes, normalized, compose=1.0)
    red = episodes[0]  # "move arm forward", gripper open
    rng = np.random.default_rng(0)
    drawn = [protos.swapped(red, 0, normalized[0], rng) for _ in range(40)]
    assert any(s.motion not in MOTIONS for s in drawn)  # combinations the demos never had
    for s in drawn:
        axes = motion_axes(s.motion)
        assert axes is not None and axes != motion_axes(red.motions[0])  # readable, and another motion
        for i, axis in enumerate(MOTION_AXES[:6]):
            assert s.action[i] == pytest.approx(protos.axis_values[i][axes[axis]])
        assert s.action[-1] == pytest.approx(normalized[0][0, -1])  # arm words leave the frame's gripper
    with pytest.raises(MotionSpecError, match="--rth-swap-compose"):
        TrainSettings(swap=0.0, swap_compose=0.5)


def test_swap_makes_the_action_query_follow_a_motion_the_image_never_came_with():
    episodes = colour_episodes(6)
    model = vla.OpenVLA.from_preset("tiny", norm_stats={"colours": _stats(episodes)}, seed=0)
    train_policy(model, episodes, TrainSettings(steps=150, batch_size=8, lr=5e-3, mix=0.5, seed=0, swap=0.5))
    red = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)  # red came only with "move arm forward"
    actions = predict_actions_given(model, [red] * 3, [TASK] * 3, list(MOTIONS))
    np.testing.assert_allclose(actions[:, :3], ACTIONS[:, :3], atol=0.005)  # each motion's own direction
    assert actions[1, 6] < 0.5 < actions[2, 6]  # "close gripper" closes; "move arm up" keeps red's open gripper


def test_swap_refusals():
    with pytest.raises(MotionSpecError, match="needs RT-H training"):
        TrainSettings(mix=0.0, swap=0.2)
    with pytest.raises(MotionSpecError, match=r"in \[0, 1\)"):
        TrainSettings(swap=1.0)
    episodes = colour_episodes(3)
    short = [dataclasses.replace(e, actions=e.actions[:, :6]) for e in episodes]
    with pytest.raises(MotionSpecError, match="7-dim"):
        MotionPrototypes.of(short, [e.actions for e in short])
    with pytest.raises(MotionSpecError, match="at least 2 motions"):
        one = [dataclasses.replace(e, motions=("stop",) * len(e.motions)) for e in episodes]
        MotionPrototypes.of(one, [e.actions for e in one])
