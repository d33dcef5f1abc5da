"""Cal-QL on real WidowX MuJoCo demos (expert + noisy + suboptimal) written as RLDS by the test."""
from __future__ import annotations

import numpy as np
import pytest

from vla.vgps.config import TrainConfig
from vla.vgps.data import load_transitions
from vla.vgps.evaluate import score_dataset
from vla.vgps.qfunction import QFunction
from vla.vgps.train import train_from_dataset, train_q

STEPS, BATCH = 300, 128
CALIBRATION_TOLERANCE = 0.1  # mean Q(data) may sit at most this far below the mean MC return


@pytest.fixture(scope="module")
def trained(widowx_rlds, tmp_path_factory):
    out = {"dirs": {}}
    for algo in ("calql", "cql"):
        folder = tmp_path_factory.mktemp(algo)
        train_from_dataset("sim_pick_mixed", widowx_rlds, folder, preset="tiny",
                           config=TrainConfig(algo=algo, steps=STEPS, batch_size=BATCH), progress=False)
        out[algo] = QFunction.from_pretrained(folder)
        out["dirs"][algo] = folder
    return out


@pytest.mark.slow
def test_calql_ranks_expert_actions_above_perturbed_ones_on_held_out_states(trained, widowx_rlds):
    report = score_dataset(trained["calql"], "sim_pick_heldout", widowx_rlds)
    assert report.transitions > 40
    assert report.ranking_accuracy >= 0.8, report


@pytest.mark.slow
def test_calql_is_calibrated_and_above_plain_cql(trained, widowx_rlds):
    calql = score_dataset(trained["calql"], "sim_pick_heldout", widowx_rlds)
    cql = score_dataset(trained["cql"], "sim_pick_heldout", widowx_rlds)
    assert calql.mean_q >= calql.mean_mc_return - CALIBRATION_TOLERANCE, calql
    assert calql.mean_q > cql.mean_q, (calql, cql)


@pytest.mark.slow
def test_saved_folder_records_how_it_was_trained(trained):
    q = trained["calql"]
    assert q.info["algo"] == "calql" and q.info["reward"] == "last-h" and q.info["datasets"] == ["sim_pick_mixed"]
    assert q.config.camera == "primary" and q.config.action_dim == 7


def test_success_reward_gives_failed_episodes_no_positive_reward(widowx_rlds):
    data = load_transitions("sim_pick_mixed", widowx_rlds, TrainConfig(reward="success"), image_size=32)
    failed = [e for e, s in enumerate(data.successes) if s is False]
    assert failed, "the suboptimal expert should fail at least once on these seeds"
    for e in range(len(data.successes)):
        r = data.rewards[data.episode == e]
        assert (r.max() > 0) == bool(data.successes[e])
    last_h = load_transitions("sim_pick_mixed", widowx_rlds, TrainConfig(reward="last-h"), image_size=32)
    assert all(last_h.rewards[last_h.episode == e].max() > 0 for e in failed)


def test_iql_trains_and_its_td_error_falls(widowx_rlds):
    config = TrainConfig(algo="iql", steps=150, batch_size=64)
    data = load_transitions("sim_pick_mixed", widowx_rlds, config, image_size=32)
    q, history = train_q(data, "tiny", config)
    assert history[-1]["td"] < history[0]["td"]
    scores = q.score(data.frames[0], data.instructions[0], data.actions[:5])
    assert scores.shape == (5,) and np.isfinite(scores).all()


@pytest.mark.slow
def test_value_guided_policy_completes_a_mujoco_episode_taking_q_argmax(trained):
    from vgps_sim_helpers import guided_episode, in_child

    run = in_child(guided_episode, str(trained["dirs"]["calql"]), 5, 7)
    assert run["reason"] in ("success", "max_steps") and run["steps"] == len(run["chosen"]) >= 1, run["reason"]
    q = trained["calql"]
    for image, candidates, values, index in run["chosen"]:
        assert len(np.unique(candidates, axis=0)) == 5
        np.testing.assert_allclose(q.score(image, run["instruction"], candidates), values, rtol=1e-5, atol=1e-6)
        assert index == int(np.argmax(values))
