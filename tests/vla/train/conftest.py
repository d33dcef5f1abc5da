"""Fixtures for the fine-tuning tests: small RLDS sets written with the real writer."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from train_fixtures import ACTIONS, COLOURS, INSTRUCTION, colour_episodes  # noqa: F401 (re-exported for tests)
from vla.data.rlds_writer import write_rlds

@pytest.fixture(scope="session")
def colour_data(tmp_path_factory) -> pathlib.Path:
    """data_dir with `colours` (8 episodes x 6 steps, 7-dim actions) and `colours6` (6-dim actions)."""
    root = tmp_path_factory.mktemp("rlds")
    write_rlds(root, "colours", colour_episodes(8, 6))
    write_rlds(root, "colours6", colour_episodes(4, 4, action_dim=6))
    return root


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""
