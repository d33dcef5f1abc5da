"""Fixtures for the RT-H tests: a tiny model trained on both queries of the coloured episodes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vla
from vla.model.normalization import statistics_from_arrays
from vla.rth.train import TrainSettings, train_policy

from rth_fixtures import colour_episodes


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def rth_model() -> vla.OpenVLA:
    """A tiny model trained briefly on both queries (it has learnt the colour -> motion map)."""
    torch.set_num_threads(1)
    episodes = colour_episodes(6)
    stats = statistics_from_arrays(np.concatenate([e.actions for e in episodes]), mask=[True] * 6 + [False])
    model = vla.OpenVLA.from_preset("tiny", norm_stats={"colours": stats}, seed=0)
    train_policy(model, episodes, TrainSettings(steps=100, batch_size=6, lr=5e-3, mix=0.5, seed=0))
    return model
