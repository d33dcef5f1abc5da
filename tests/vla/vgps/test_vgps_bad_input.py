"""The issue's bad-input list, end to end: each mistake fails early with an error that names the fix."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from vgps_rlds_helpers import STEPS, tiny_policy, write_small

from vla.vgps import QFunction, ValueGuidedPolicy
from vla.vgps.config import NAMED_BOUNDS, TrainConfig
from vla.vgps.data import load_transitions
from vla.vgps.errors import MismatchError, ScoreError, TrainingDataError
from vla.vgps.train import train_q

INSTRUCTION = "pick up the red block"


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_policy_of_another_action_dim_is_refused_at_construction():
    q = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"])
    with pytest.raises(MismatchError, match="policy predicts 6-dim actions.*scores 7-dim"):
        ValueGuidedPolicy(tiny_policy(action_dim=6), q, k=4)


def test_q_camera_missing_from_the_observation_is_refused():
    q = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], camera="wrist")
    guided = ValueGuidedPolicy(tiny_policy(), q, k=4)
    with pytest.raises(MismatchError, match=r"camera role 'wrist'.*\['primary'\]"):
        guided.act({"primary": _image()}, INSTRUCTION)


def test_nan_scores_stop_the_guided_policy():
    q = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"])
    with torch.no_grad():
        q.critics[0][-1].bias.fill_(float("nan"))
    with pytest.raises(ScoreError, match="retrain"):
        ValueGuidedPolicy(tiny_policy(), q, k=4).act({"primary": _image()}, INSTRUCTION)


def test_k_over_the_servers_limit_is_refused_by_the_server():
    from serving.client import PolicyClient
    from serving.errors import RequestRejectedError
    from serving.policies import MAX_SAMPLES, NoopPolicy
    from serving.server import PolicyServer

    server = PolicyServer(NoopPolicy(7), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = PolicyClient(server.address, timeout_s=10)
    try:
        guided = ValueGuidedPolicy(client, QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"]), k=MAX_SAMPLES + 1)
        limit = f"n_samples={MAX_SAMPLES + 1} must be an int in 1..{MAX_SAMPLES}"
        with pytest.raises(RequestRejectedError, match=limit):
            guided.act({"primary": _image()}, INSTRUCTION)
    finally:
        client.close()
        server.close()
        thread.join(timeout=5)


def test_nan_actions_in_the_data_are_refused_naming_the_episode(tmp_path):
    write_small(tmp_path, "lift", ["lift it", "lift it"], [True, True])
    data = load_transitions("lift", tmp_path, TrainConfig(), image_size=16)
    actions = data.actions.copy()
    actions[STEPS + 2, 0] = np.nan  # a converter that let a NaN through (our writer refuses them)
    with pytest.raises(TrainingDataError, match="NaN or inf actions .first: episode 1 step 2"):
        train_q(dataclasses.replace(data, actions=actions), "tiny", TrainConfig(steps=1, batch_size=4))


def test_diverging_training_stops_with_a_hint(tmp_path, one_torch_thread):
    write_small(tmp_path, "lift", ["lift it", "lift it"], [True, True])
    config = TrainConfig(steps=50, batch_size=8, lr=1e30)
    data = load_transitions("lift", tmp_path, config, image_size=16)
    with pytest.raises(TrainingDataError, match="diverged.*lower --lr"):
        train_q(data, "tiny", config)
