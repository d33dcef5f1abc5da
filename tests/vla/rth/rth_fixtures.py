"""Data for the RT-H tests: coloured episodes whose motion and action depend on the colour."""
from __future__ import annotations

import numpy as np
from vla.rth.train import MotionEpisode

# colour -> (motion, action): the image alone says which motion and action come
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220]], np.uint8)
MOTIONS = ("move arm forward", "move arm left and close gripper", "move arm up")
ACTIONS = np.array([[0.03, 0.0, 0.0, 0, 0, 0, 1.0],
                    [0.0, 0.03, 0.0, 0, 0, 0, 0.0],
                    [0.0, 0.0, 0.03, 0, 0, 0, 1.0]], np.float32)
TASK = "move the arm"


def colour_episodes(n: int, steps: int = 4, size: int = 32, seed: int = 0) -> list[MotionEpisode]:
    """`n` episodes cycling through the colours, a little pixel noise per step."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        k = e % len(COLOURS)
        noise = rng.integers(-10, 11, (steps, size, size, 3))
        frames = np.clip(COLOURS[k].astype(int) + noise, 0, 255).astype(np.uint8)
        out.append(MotionEpisode(frames, np.repeat(ACTIONS[k:k + 1], steps, 0), TASK, (MOTIONS[k],) * steps))
    return out
