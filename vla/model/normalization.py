"""Action normalization with OpenVLA's statistics format (q01/q99 bounds, per-dimension mask).

`norm_stats` = {dataset_key: {"action": {"mean","std","min","max","q01","q99","mask"},
"proprio": {...}, "num_transitions": int, "num_trajectories": int}}.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

import numpy as np

from vla.errors import StatisticsError, UnknownUnnormKeyError

REQUIRED_ACTION_KEYS = ("q01", "q99")
QUANTILES = (0.01, 0.99)  # OpenVLA's bounds: the 1st and 99th percentile of every transition


@dataclasses.dataclass(frozen=True)
class ActionStats:
    """The part of one dataset's statistics that (un)normalization needs."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray  # True = normalize this dimension; False (gripper) = passed through

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_dict(cls, action: Mapping[str, Any], where: str = "statistics") -> "ActionStats":
        """Validate and read an `action` statistics dict."""
        missing = [k for k in REQUIRED_ACTION_KEYS if k not in action]
        if missing:
            raise StatisticsError(
                f"{where} lack {missing}; recompute them (`vla data stats`) so they carry q01 and q99")
        q01 = np.asarray(action["q01"], dtype=np.float64)
        q99 = np.asarray(action["q99"], dtype=np.float64)
        # the format makes `mask` optional; OpenVLA's default is to normalize every dimension
        mask = np.asarray(action["mask"], dtype=bool) if "mask" in action else np.ones_like(q01, dtype=bool)
        if q01.ndim != 1 or q01.shape != q99.shape or q01.shape != mask.shape:
            raise StatisticsError(
                f"{where}: q01 {q01.shape}, q99 {q99.shape} and mask {mask.shape} must be equal 1-D shapes")
        if np.any(q99[mask] < q01[mask]):
            raise StatisticsError(f"{where}: q99 < q01 in some dimension; the statistics are corrupt, recompute them")
        return cls(q01=q01, q99=q99, mask=mask)


def select_stats(norm_stats: Mapping[str, Any], unnorm_key: str | None) -> tuple[str, ActionStats]:
    """Pick one dataset's action statistics; None is allowed only when there is exactly one."""
    if not norm_stats:
        raise StatisticsError(
            "this model has no normalization statistics (config.json `norm_stats` and "
            "dataset_statistics.json are both absent); pass norm_stats= to from_preset or put the "
            "fine-tuning run's dataset_statistics.json into the checkpoint folder")
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise UnknownUnnormKeyError(
                f"this model has statistics for several datasets; pass unnorm_key= one of {sorted(norm_stats)}")
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats:
        near = difflib.get_close_matches(unnorm_key, list(norm_stats), n=1)
        hint = f" did you mean {near[0]!r}?" if near else ""
        raise UnknownUnnormKeyError(f"unnorm_key {unnorm_key!r} is not in the model's statistics;{hint} "
                                    f"known keys: {sorted(norm_stats)}")
    entry = norm_stats[unnorm_key]
    if "action" not in entry:
        raise StatisticsError(f"statistics {unnorm_key!r} have no 'action' entry; recompute them")
    return unnorm_key, ActionStats.from_dict(entry["action"], where=f"statistics {unnorm_key!r}")


def _check_dim(x: np.ndarray, stats: ActionStats) -> None:
    if x.shape[-1] != stats.dim:
        raise StatisticsError(f"actions have {x.shape[-1]} dimensions but the statistics have {stats.dim}; "
                              "use statistics computed on this action space")


def normalize_actions(actions: np.ndarray, stats: ActionStats | Mapping[str, Any], clip: bool = True) -> np.ndarray:
    """Map q01..q99 to -1..1 on masked dimensions; with `clip` (OpenVLA's recipe) the 2% tails saturate."""
    stats = stats if isinstance(stats, ActionStats) else ActionStats.from_dict(stats)
    a = np.asarray(actions, dtype=np.float64)
    _check_dim(a, stats)
    scaled = 2.0 * (a - stats.q01) / (stats.q99 - stats.q01 + 1e-8) - 1.0
    if clip:
        scaled = np.clip(scaled, -1.0, 1.0)
    return np.where(stats.mask, scaled, a)


def unnormalize_actions(normalized: np.ndarray, stats: ActionStats | Mapping[str, Any]) -> np.ndarray:
    """Inverse of `normalize_actions` on masked dimensions; unmasked ones pass through."""
    stats = stats if isinstance(stats, ActionStats) else ActionStats.from_dict(stats)
    n = np.asarray(normalized, dtype=np.float64)
    _check_dim(n, stats)
    return np.where(stats.mask, 0.5 * (n + 1) * (stats.q99 - stats.q01) + stats.q01, n)


def _summary(x: np.ndarray) -> dict[str, list[float]]:
    lo, hi = np.quantile(x, QUANTILES, axis=0)
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "max": x.max(0).tolist(),
            "min": x.min(0).tolist(), "q01": lo.tolist(), "q99": hi.tolist()}


def symmetric_bounds(stats: dict[str, Any]) -> dict[str, Any]:
    """One dataset's statistics with each normalized action dim's q01/q99 widened to -b..b, b = max(|q01|, |q99|).

    For delta actions: OpenVLA's q01..q99 bins cannot express a direction the demos never took (a WidowX
    set that never moves backward has q01 ~ 0 on x), so a correction asking for it yields no motion."""
    a = ActionStats.from_dict(stats["action"])
    bound = np.maximum(np.abs(a.q01), np.abs(a.q99))
    return {**stats, "action": {**stats["action"], "q01": np.where(a.mask, -bound, a.q01).tolist(),
                                "q99": np.where(a.mask, bound, a.q99).tolist()}}


def statistics_from_arrays(actions: np.ndarray, proprio: np.ndarray | None = None,
                           mask: np.ndarray | None = None, num_trajectories: int = 1) -> dict[str, Any]:
    """One dataset's statistics in OpenVLA's format from all its transitions ([N, A] actions)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise StatisticsError(f"actions must be a non-empty [N, A] array, got shape {a.shape}")
    m = np.ones(a.shape[1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != (a.shape[1],):
        raise StatisticsError(f"mask shape {m.shape} does not match {a.shape[1]} action dimensions")
    p = np.zeros((a.shape[0], 1)) if proprio is None else np.asarray(proprio, dtype=np.float64)
    return {"action": {**_summary(a), "mask": m.tolist()}, "proprio": _summary(p),
            "num_transitions": int(a.shape[0]), "num_trajectories": int(num_trajectories)}
