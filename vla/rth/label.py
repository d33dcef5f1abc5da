"""Label a whole RLDS dataset with RT-H motions and write it back as `<name>_rth`.

The registry entry says what can be labelled: end-effector delta actions (labelled directly),
absolute end-effector actions or end-effector poses in proprio (labelled from their per-step
change). The output is our standardized schema (`vla.data.rlds_writer`) with one string
`language_motion` per step, so `vla.data` reads it without a registry entry.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import pathlib
from collections.abc import Iterator

import numpy as np

from vla.data.registry import ActionEncoding, DatasetEntry, Registry, StateEncoding
from vla.data.rlds import DatasetSource, decode_image, iter_episodes, open_dataset
from vla.data.rlds_writer import Episode, write_rlds
from vla.data.standardize import StdEpisode, quat_to_euler
from vla.data.statistics import QUANTILES, source_statistics
from vla.rth.errors import MotionSpecError, NoEndEffectorError
from vla.rth.motions import (DEFAULT_THRESHOLD, DEFAULT_WINDOW, MotionSource, MotionSpec, label_motions,
                             pose_deltas)

logger = logging.getLogger(__name__)

MOTION_FIELD = "language_motion"  # the per-step extra the labelled dataset carries
SUFFIX = "_rth"
DELTA_ENCODINGS = (ActionEncoding.EEF_DELTA, ActionEncoding.EEF_VELOCITY)
POSE_STATE_DIMS = {StateEncoding.EEF_EULER: 7, StateEncoding.EEF_QUAT: 8}  # xyz + rotation + gripper


class Signal(enum.Enum):
    """Where the labelled motion comes from (`auto`: actions if they are end-effector, else proprio)."""

    AUTO = "auto"
    ACTION = "action"  # the standardized action
    PROPRIO = "proprio"  # the proprio state as end-effector poses


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """How `label_dataset` labels."""

    window: int = DEFAULT_WINDOW  # steps looked ahead per label
    threshold: float = DEFAULT_THRESHOLD  # fraction of each axis' q01/q99 spread (or units with `absolute`)
    absolute: bool = False  # the threshold is in the signal's units (m, rad, gripper) for every axis
    signal: Signal = Signal.AUTO
    native_actions_are_eef_delta: bool = False  # standardized datasets: their 7-dim actions are eef deltas


@dataclasses.dataclass(frozen=True)
class LabelReport:
    """What `label_dataset` wrote."""

    path: pathlib.Path
    episodes: int
    steps: int
    counts: collections.Counter  # motion -> steps
    spec: MotionSpec


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Which array of a standardized episode is the signal, and in which source."""

    array: str  # "action" | "state"
    source: MotionSource

    def signal(self, ep: StdEpisode) -> np.ndarray:
        """The [T, 7] signal of one episode (quaternion poses become roll/pitch/yaw)."""
        x = np.asarray(getattr(ep, self.array), np.float64)
        if self.array == "state" and x.shape[1] == POSE_STATE_DIMS[StateEncoding.EEF_QUAT]:
            x = np.concatenate([x[:, :3], quat_to_euler(x[:, 3:7]), x[:, 7:]], axis=1)
        return x


def plan_for(entry: DatasetEntry, config: LabelConfig) -> _Plan:
    """Decide from the registry entry what to label; a dataset with no end-effector signal raises."""
    action_eef = (entry.action.encoding in DELTA_ENCODINGS and entry.action_dim == 7) or (
        entry.action.encoding is ActionEncoding.NATIVE and config.native_actions_are_eef_delta)
    action_pose = entry.action.encoding is ActionEncoding.EEF_ABSOLUTE and entry.action_dim == 7
    proprio_pose = entry.state_encoding in POSE_STATE_DIMS
    why = (f"dataset {entry.name!r} has action.encoding {entry.action.encoding.value!r} and state_encoding "
           f"{entry.state_encoding.value!r}")
    if config.signal is Signal.PROPRIO:
        if not proprio_pose:
            raise NoEndEffectorError(f"{why}: its proprio is not an end-effector pose (state_encoding must be one "
                                     f"of {[e.value for e in POSE_STATE_DIMS]}); use --signal action")
        return _Plan("state", MotionSource.PROPRIO)
    if action_eef or action_pose:
        return _Plan("action", MotionSource.ACTION if action_eef else MotionSource.PROPRIO)
    if config.signal is Signal.ACTION or not proprio_pose:
        hint = (" If its 7-dim actions are end-effector deltas (xyz, roll/pitch/yaw, gripper 1 = open), pass "
                "--native-actions-are-eef-delta." if entry.action.encoding is ActionEncoding.NATIVE else "")
        raise NoEndEffectorError(
            f"{why}: neither end-effector actions (action.encoding {[e.value for e in DELTA_ENCODINGS]} or "
            f"'eef_absolute' with a 7-dim layout) nor end-effector poses (state_encoding "
            f"{[e.value for e in POSE_STATE_DIMS]}), so no motion words can be derived. Fix the registry "
            f"entry's action.encoding / state_encoding if the data has them.{hint}")
    return _Plan("state", MotionSource.PROPRIO)


def motion_spec_for(source: DatasetSource, config: LabelConfig, split: str = "train") -> tuple[_Plan, MotionSpec]:
    """The labelling plan and thresholds for an opened dataset (relative ones from its statistics)."""
    plan = plan_for(source.entry, config)
    words = source.entry.motion_words
    if config.absolute:
        return plan, MotionSpec.absolute(config.threshold, config.window, words, plan.source)
    if plan.array == "action" and plan.source is MotionSource.ACTION:
        stats = source_statistics(source, split)["action"]  # the dataset's q01/q99, cached with the data
        q01, q99 = stats["q01"], stats["q99"]
    else:  # poses: the spread of their per-step change, computed here
        signal = np.concatenate([pose_deltas(plan.signal(ep)) for ep in iter_episodes(source, split)])
        q01, q99 = np.quantile(signal, QUANTILES, axis=0, method="linear")
    if len(q01) != 7:
        raise MotionSpecError(f"dataset {source.name!r} has {len(q01)}-dim {plan.array}s; RT-H labels the 7-dim "
                              "end-effector convention (xyz, roll/pitch/yaw, gripper)")
    return plan, MotionSpec.relative(q01, q99, config.threshold, config.window, words, plan.source)


def label_dataset(name: str, data_dir: str | pathlib.Path, out: str | pathlib.Path,
                  config: LabelConfig = LabelConfig(), *, split: str = "train", registry: Registry | None = None,
                  overwrite: bool = False) -> LabelReport:
    """Write `<out>/<name>_rth/` = the dataset's standardized steps + a `language_motion` per step."""
    source = open_dataset(name, data_dir, registry)
    plan, spec = motion_spec_for(source, config, split)
    logger.info("labelling %s from %s (%s) with window %d, thresholds %s", name, plan.array, spec.source.value,
                spec.window, np.round(spec.thresholds, 5).tolist())
    counts: collections.Counter = collections.Counter()
    totals = {"episodes": 0, "steps": 0}

    def episodes() -> Iterator[Episode]:
        for ep in iter_episodes(source, split):
            motions = label_motions(plan.signal(ep), spec)
            counts.update(motions)
            totals["episodes"] += 1
            totals["steps"] += len(motions)
            yield Episode(
                images={role: np.stack([decode_image(b) for b in frames]) for role, frames in ep.images.items()},
                state=ep.state, action=ep.action, instruction=_one_instruction(ep),
                extras={MOTION_FIELD: motions},
                metadata={"file_path": f"{name}/{ep.episode_id}"})

    path = write_rlds(out, name + SUFFIX, episodes(), description=f"{name} with RT-H language motions "
                      f"({MOTION_FIELD}) labelled from {plan.array}", image_encoding="png", overwrite=overwrite)
    return LabelReport(path, totals["episodes"], totals["steps"], counts, spec)


def _one_instruction(ep: StdEpisode) -> str:
    distinct = sorted(set(ep.instructions.tolist()))
    if len(distinct) != 1:
        raise MotionSpecError(f"{ep.dataset} episode {ep.episode_id} changes its instruction mid-episode "
                              f"({distinct[:3]}); the labelled dataset keeps one instruction per episode")
    return distinct[0]
