"""Fixtures for V-GPS tests: real WidowX MuJoCo episodes (expert, noisy, suboptimal) written as RLDS."""
from __future__ import annotations

import numpy as np
import pytest

TASK = "widowx-pick-block"
IMAGE_SIZE = 64  # rendered size; the tiny critic resizes to its own 32 px


def in_child(fn, *args):
    """Run fn(*args) in a fresh spawned process: MuJoCo's GL renderer and TensorFlow crash in one process."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def collect(task: str, variants: list[tuple[str, int]], image_size: int = IMAGE_SIZE) -> list:
    """Run the scene's scripted expert variants on the given seeds (in a child process); return Episodes."""
    return in_child(_collect, task, variants, image_size)


def _collect(task: str, variants: list[tuple[str, int]], image_size: int) -> list:
    import robot
    import sim
    from vla.data.rlds_writer import Episode

    scene = sim.make(task, seed=0, image_size=image_size)
    config = sim.get_task(task)
    episodes = []
    for variant, seed in variants:
        policy = config.expert(scene, variant, seed=seed)
        res = robot.run_episode(scene, policy, config.instruction, max_steps=config.max_steps, seed=seed)
        steps = res.steps
        episodes.append(Episode(
            images={role: np.stack([f[role] for f in res.frames[:steps]]) for role in res.frames[0]},
            state=np.stack(res.proprio[:steps]).astype(np.float32),
            action=np.stack(res.actions).astype(np.float32),
            instruction=config.instruction, success=bool(res.success),
            metadata={"variant": variant, "seed": seed}))
    scene.close()
    return episodes


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
