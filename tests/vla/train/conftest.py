"""Fixtures for the fine-tuning tests: small RLDS sets written with the real writer."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from vla.data.rlds_writer import Episode, write_rlds

# Each episode shows one colour; its action (constant over the episode) depends on the colour only,
# so predicting the action tokens needs the image, not the (shared) instruction.
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 220, 50]], np.uint8)
ACTIONS = np.array([[-0.04, 0.02, 0.01, 0.0, 0.1, -0.2, 1.0],
                    [0.03, -0.01, 0.02, 0.1, -0.1, 0.0, 0.0],
                    [0.0, 0.04, -0.02, -0.1, 0.0, 0.2, 1.0],
                    [0.02, 0.0, -0.01, 0.05, 0.05, 0.1, 0.0]], np.float32)
INSTRUCTION = "move to the coloured cube"


def colour_episodes(n_episodes: int, steps: int, seed: int = 0, size: int = 32,
                    action_dim: int = 7) -> list[Episode]:
    """`n_episodes` episodes cycling through the colours, with a little pixel noise per step."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n_episodes):
        k = e % len(COLOURS)
        noise = rng.integers(-12, 13, (steps, size, size, 3))
        frames = np.clip(COLOURS[k].astype(int) + noise, 0, 255).astype(np.uint8)
        action = np.repeat(ACTIONS[k:k + 1, :action_dim], steps, axis=0)
        out.append(Episode(images={"primary": frames}, state=np.zeros((steps, 2), np.float32), action=action,
                           instruction=INSTRUCTION, success=True))
    return out


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory) -> pathlib.Path:
    """data_dir with `colours` (8 episodes x 6 steps, 7-dim actions) and `colours6` (6-dim actions)."""
    root = tmp_path_factory.mktemp("rlds")
    write_rlds(root, "colours", colour_episodes(8, 6))
    write_rlds(root, "colours6", colour_episodes(4, 4, action_dim=6))
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores are shared by the whole CI; torch's spinning threads only slow tiny steps down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
