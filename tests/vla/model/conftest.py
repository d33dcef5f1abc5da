"""Fixtures for the model tests: the reference checkpoint loaded once, a tiny random model."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

import vla
from vla.model.normalization import statistics_from_arrays


@pytest.fixture(scope="session")
def reference_model(reference_dir: pathlib.Path) -> vla.OpenVLA:
    return vla.OpenVLA.from_pretrained(reference_dir / "checkpoint")


@pytest.fixture(scope="session")
def reference_cases(reference_dir: pathlib.Path) -> list[dict]:
    return json.loads((reference_dir / "expected" / "expected.json").read_text())["cases"]


@pytest.fixture(scope="session")
def toy_stats() -> dict:
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, size=(200, 7))
    actions[:, 6] = actions[:, 6] > 0  # gripper open/closed, left unnormalized
    mask = [True] * 6 + [False]
    return {"toy": statistics_from_arrays(actions, mask=mask, num_trajectories=4)}


@pytest.fixture(scope="session")
def tiny_model(toy_stats: dict) -> vla.OpenVLA:
    torch.set_num_threads(2)
    return vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=0)


@pytest.fixture(scope="session")
def random_image():
    """A factory of random RGB uint8 images: random_image(seed, (h, w))."""
    def make(seed: int, hw: tuple[int, int] = (224, 224)) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    return make
