"""Shared fixtures: where ../shared lives, and skipping cleanly when it is absent."""
from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("VLA_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """The reference data folder (../shared); tests using it skip with a reason where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent (set VLA_SHARED to its path)")
    return SHARED


@pytest.fixture(scope="session")
def reference_dir(shared_dir: pathlib.Path) -> pathlib.Path:
    path = shared_dir / "reference" / "openvla-tiny"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: two cores are shared by the whole CI, and torch's spinning
    threads only slow tiny steps down."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
