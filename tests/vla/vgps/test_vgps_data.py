"""Rewards, Monte-Carlo returns, critic bounds, and datasets offline RL must refuse."""
from __future__ import annotations

import numpy as np
import pytest
from vgps_rlds_helpers import write_small

from vla.vgps.config import TrainConfig
from vla.vgps.data import action_bounds, episode_rewards, load_transitions, mc_returns
from vla.vgps.errors import TrainingDataError, UnknownPresetError


def test_last_h_marks_the_last_three_steps_positive_and_terminal():
    r, d = episode_rewards(6, None, TrainConfig())
    np.testing.assert_array_equal(r, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(d, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(mc_returns(r, d, 0.98), [0.98 ** 3, 0.98 ** 2, 0.98, 1, 1, 1], rtol=1e-6)


def test_success_reward_and_the_minus_one_scheme():
    config = TrainConfig(reward="success", positive_reward=0.0, negative_reward=-1.0)
    r, d = episode_rewards(4, False, config)
    np.testing.assert_array_equal(r, [-1, -1, -1, -1])
    np.testing.assert_array_equal(d, [0, 0, 0, 1])  # the data ends: no bootstrap past it
    np.testing.assert_allclose(mc_returns(r, d, 0.5), [-1.875, -1.75, -1.5, -1])
    r, _ = episode_rewards(4, True, config)
    np.testing.assert_array_equal(r, [-1, 0, 0, 0])


def test_bounds_from_data_keep_constant_dims_unscaled():
    a = np.zeros((100, 7), np.float32)
    a[:, 0] = np.linspace(-0.02, 0.02, 100)
    b = action_bounds(a, "data")
    assert b.low[0] == pytest.approx(-0.0196, abs=1e-4) and b.high[0] == pytest.approx(0.0196, abs=1e-4)
    assert b.low[3] == -1.0 and b.high[3] == 1.0
    assert action_bounds(a, "bridge").high[3] == 0.25
    with pytest.raises(UnknownPresetError, match="bridge"):
        action_bounds(a, "bridg")


def test_datasets_that_cannot_be_trained_on_are_refused(tmp_path):
    write_small(tmp_path, "no_text", ["", "lift it"], [True, True])
    with pytest.raises(TrainingDataError, match="language instruction"):
        load_transitions("no_text", tmp_path, TrainConfig(), image_size=16)
    write_small(tmp_path, "all_failed", ["lift it", "lift it"], [False, False])
    with pytest.raises(TrainingDataError, match="no successful episode"):
        load_transitions("all_failed", tmp_path, TrainConfig(reward="success"), image_size=16)
    data = load_transitions("all_failed", tmp_path, TrainConfig(), image_size=8)  # last-h ignores the flag
    assert len(data) == 10 and data.frames.shape == (10, 8, 8, 3) and data.rewards.sum() == 6
    write_small(tmp_path, "unknown", ["lift it", "lift it"], [None, True])
    with pytest.raises(TrainingDataError, match="no success flag"):
        load_transitions("unknown", tmp_path, TrainConfig(reward="success"), image_size=16)
    with pytest.raises(TrainingDataError, match="camera"):
        load_transitions("unknown", tmp_path, TrainConfig(), image_size=16, camera="wrist")


def test_cli_trains_and_scores_and_reports_bad_data(tmp_path, capsys):
    import json

    from scripts.cli import main

    write_small(tmp_path, "lift", ["lift it", "lift it"], [True, False])
    assert main(["vgps", "train", "--dataset", "lift", "--data-dir", str(tmp_path), "--out", str(tmp_path / "q"),
                 "--steps", "3", "--batch-size", "8", "--algo", "iql"]) == 0
    capsys.readouterr()
    assert main(["vgps", "score", str(tmp_path / "q"), "--dataset", "lift", "--data-dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["transitions"] == 10 and 0 <= report["ranking_accuracy"] <= 1
    write_small(tmp_path, "failed", ["lift it"], [False])
    assert main(["vgps", "train", "--dataset", "failed", "--data-dir", str(tmp_path), "--out", str(tmp_path / "q2"),
                 "--reward", "success"]) == 1
    assert "no successful episode" in capsys.readouterr().err
