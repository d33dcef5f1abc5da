"""Sim throughput: control steps/s per registered scene with and without two 128x128 cameras,
and scripted-demo collection in episodes/min with 1 and 2 workers.

The peer is the robosuite Lift scene (Panda, same two cameras) measured in the same run; the
issue's yardstick was ~0.5 s per robosuite step with two 128x128 cameras on this machine.

    .venv/bin/python benchmarks/sim_throughput.py [--steps 40] [--episodes 16] [--tasks ...]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import sim  # noqa: E402
from sim.collect import CollectConfig, collect, parse_mix  # noqa: E402

PEER = "lift"
SIZE = 128


def steps_per_s(task: str, steps: int, render: bool) -> float:
    """Control steps per second of a small random walk (after one warm-up step)."""
    cfg = sim.get_task(task)
    scene = cfg.make(seed=0, options=sim.SceneOptions(rig="both", image_size=SIZE, render_images=render))
    rng = np.random.default_rng(0)
    try:
        scene.reset(seed=0)
        scene.act(np.zeros(7))
        start = time.perf_counter()
        for _ in range(steps):
            action = np.concatenate([rng.uniform(-0.01, 0.01, 3), np.zeros(3), [rng.uniform()]])
            scene.act(action)
        return steps / (time.perf_counter() - start)
    finally:
        scene.close()


def episodes_per_min(task: str, episodes: int, workers: int) -> tuple[float, float]:
    """Collection rate including RLDS writing; returns (episodes/min, expert success rate)."""
    with tempfile.TemporaryDirectory() as out:
        result = collect(CollectConfig(task, episodes, pathlib.Path(out), workers=workers,
                                       mix=parse_mix("expert:1.0"), image_size=SIZE))
    return episodes / result.wall_s * 60, result.success_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--peer-steps", type=int, default=10, help="steps for the (slow) robosuite scenes")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--tasks", nargs="*", default=list(sim.TASKS))
    parser.add_argument("--collect-task", default="widowx-pick-block")
    args = parser.parse_args()

    rates = {}
    print(f"steps/s, two {SIZE}x{SIZE} cameras (rig both) vs no rendering")
    for task in args.tasks:
        n = args.steps if task.startswith("widowx") else args.peer_steps
        rendered, bare = steps_per_s(task, n, True), steps_per_s(task, n, False)
        rates[task] = rendered
        print(f"  {task:<22} {rendered:8.1f} steps/s rendered ({1e3 / rendered:6.1f} ms/step)"
              f" {bare:8.1f} steps/s physics only ({1e3 / bare:6.1f} ms/step)", flush=True)
    if PEER in rates:
        for task, rate in rates.items():
            if task.startswith("widowx"):
                print(f"  {task} rendered vs robosuite {PEER} rendered: {rate / rates[PEER]:.1f}x faster")
    import tensorflow_datasets  # noqa: F401  (the writer's TensorFlow import is a one-off cost, not collection's)

    print(f"collection of {args.collect_task} ({args.episodes} episodes, {SIZE} px, both cameras, RLDS write included)")
    one, ok1 = episodes_per_min(args.collect_task, args.episodes, 1)
    two, ok2 = episodes_per_min(args.collect_task, args.episodes, 2)
    print(f"  1 worker  {one:7.1f} episodes/min (expert success {ok1:.2f})")
    print(f"  2 workers {two:7.1f} episodes/min (expert success {ok2:.2f}); ratio 2/1 = {two / one:.2f}")


if __name__ == "__main__":
    main()
