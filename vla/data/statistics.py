"""Per-dataset action/proprio statistics in the model's `norm_stats` format, cached next to the data.

OpenVLA's recipe: every transition of the split concatenated, then per dimension mean, std, min,
max and `numpy.quantile(x, 0.01 / 0.99)` (linear interpolation). The cache file's name carries a
hash of the entry's content and of `dataset_info.json`, so editing an entry or rewriting the data
never reuses stale numbers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
from typing import Any

import numpy as np

from vla.data.errors import StatisticsError
from vla.data.registry import Registry
from vla.data.rlds import DatasetSource, iter_episodes, open_dataset

logger = logging.getLogger(__name__)

STATS_FORMAT = 1  # bump when the computation changes, to invalidate every cache
QUANTILES = (0.01, 0.99)


def _summary(x: np.ndarray) -> dict[str, list[float]]:
    if x.shape[1] == 0:
        return {k: [] for k in ("mean", "std", "min", "max", "q01", "q99")}
    lo, hi = np.quantile(x, QUANTILES, axis=0, method="linear")
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(),
            "max": x.max(0).tolist(), "q01": lo.tolist(), "q99": hi.tolist()}


def action_mask(source: DatasetSource, action_dim: int) -> list[bool]:
    """Which action dims get normalized: all but the gripper for the 7-dim convention, all for native."""
    if source.entry.action_dim == 7:
        return [True] * 6 + [False]
    return [True] * action_dim


def cache_path(source: DatasetSource, split: str) -> pathlib.Path:
    """Where the statistics of `source`/`split` are cached (next to the data)."""
    digest = hashlib.sha256()
    digest.update(source.entry.content_hash().encode())
    digest.update((source.path / "dataset_info.json").read_bytes())
    digest.update(f"{split}:{STATS_FORMAT}".encode())
    return source.path / f"vla_statistics-{split}-{digest.hexdigest()[:16]}.json"


def statistics_of(source: DatasetSource, split: str = "train") -> dict[str, Any]:
    """Compute the statistics of every transition of `split` (no cache)."""
    actions, states, episodes = [], [], 0
    for ep in iter_episodes(source, split):
        actions.append(ep.action)
        states.append(ep.state)
        episodes += 1
    if not episodes:
        raise StatisticsError(f"{source.path} split {split!r} has no episodes; nothing to compute statistics from")
    a = np.concatenate(actions).astype(np.float32)
    s = np.concatenate(states).astype(np.float32)
    return {
        "action": {**_summary(a), "mask": action_mask(source, a.shape[1])},
        "proprio": {**_summary(s), "mask": [True] * s.shape[1]},
        "num_transitions": int(a.shape[0]),
        "num_trajectories": episodes,
    }


def compute_statistics(name: str, data_dir: str | pathlib.Path, split: str = "train", *,
                       registry: Registry | None = None, use_cache: bool = True) -> dict[str, Any]:
    """Statistics of dataset `name` in the model's norm_stats format for one key; cached as JSON."""
    source = open_dataset(name, data_dir, registry)
    return source_statistics(source, split, use_cache=use_cache)


def source_statistics(source: DatasetSource, split: str = "train", *, use_cache: bool = True) -> dict[str, Any]:
    """`compute_statistics` for an already opened dataset."""
    path = cache_path(source, split)
    if use_cache and path.is_file():
        logger.info("statistics of %s from cache %s", source.name, path)
        return json.loads(path.read_text())
    stats = statistics_of(source, split)
    if not _writable(path.parent):
        logger.warning("statistics of %s not cached: %s is read-only; they will be recomputed next time",
                       source.name, path.parent)
        return stats
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats, indent=1))
        tmp.rename(path)
    except OSError as e:
        logger.warning("statistics of %s not cached: cannot write %s (%s); they will be recomputed next time",
                       source.name, path, e)
    return stats


def _writable(folder: pathlib.Path) -> bool:
    """False for folders marked read-only, even for root (who may write anyway): shared data stays untouched."""
    return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK)
