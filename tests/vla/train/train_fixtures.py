"""Data builders shared by the fine-tuning tests (a plain module: `conftest` names clash across folders)."""
from __future__ import annotations

import numpy as np

from vla.data.rlds_writer import Episode

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
