"""Fixtures for V-GPS tests: real WidowX MuJoCo episodes (expert, noisy, suboptimal) written as RLDS."""
from __future__ import annotations

import pytest
from vgps_sim_helpers import TASK, collect

TRAIN = [("expert", s) for s in range(10)] + [("noisy", 100 + s) for s in range(10)] + \
    [("suboptimal", 200 + s) for s in range(4)]
HELD_OUT = [("expert", 1000 + s) for s in range(5)]


@pytest.fixture(scope="session")
def widowx_rlds(tmp_path_factory):
    """data_dir with `sim_pick_mixed` (10 expert, 10 noisy, 4 suboptimal) and `sim_pick_heldout` (5 expert)."""
    from vla.data.rlds_writer import write_rlds

    root = tmp_path_factory.mktemp("vgps_rlds")
    episodes = collect(TASK, TRAIN + HELD_OUT)
    write_rlds(root, "sim_pick_mixed", episodes[:len(TRAIN)])
    write_rlds(root, "sim_pick_heldout", episodes[len(TRAIN):])
    return root
