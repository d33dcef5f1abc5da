"""Small RLDS datasets for V-GPS tests (the repo's real writer, random pixels, 5 steps each) and a tiny policy."""
from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

STEPS = 5
EMBEDDING_DIM = 512


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    """n random unit vectors [n, 512], like the Universal Sentence Encoder's outputs."""
    v = np.random.default_rng(seed).normal(size=(n, EMBEDDING_DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_small(root: pathlib.Path, name: str, instructions: Sequence[str], successes: Sequence[bool | None],
                embeddings: np.ndarray | None = None, actions: np.ndarray | None = None) -> None:
    """One 5-step episode per instruction; `embeddings` [E, D] adds a per-step language_embedding (one per episode)."""
    from vla.data.rlds_writer import Episode, write_rlds

    rng = np.random.default_rng(0)
    eps = []
    for e, (text, ok) in enumerate(zip(instructions, successes)):
        extras = {} if embeddings is None else {"language_embedding": np.repeat(embeddings[e][None], STEPS, axis=0)}
        images = {"primary": rng.integers(0, 256, (STEPS, 16, 16, 3), dtype=np.uint8)}
        action = rng.normal(size=(STEPS, 7)).astype(np.float32) if actions is None else actions[e]
        eps.append(Episode(images=images,
                           state=np.zeros((STEPS, 2), np.float32), action=action, instruction=text, success=ok,
                           extras=extras))
    write_rlds(root, name, eps, image_encoding="png")


def tiny_policy(action_scale: float = 0.05, action_dim: int = 7):
    """A randomly initialized tiny OpenVLA with statistics of uniform actions in +-action_scale."""
    import vla
    from vla.model.normalization import statistics_from_arrays

    a = np.random.default_rng(0).uniform(-action_scale, action_scale, size=(200, action_dim))
    a[:, -1] = a[:, -1] > 0
    mask = [True] * (action_dim - 1) + [False]
    stats = {"toy": statistics_from_arrays(a, mask=mask, num_trajectories=4)}
    return vla.OpenVLA.from_preset("tiny", norm_stats=stats, seed=0)
