"""The one engine that turns any registry entry's raw steps into standardized episodes.

Conventions are data: `GRIPPER_CONVERTERS` and `ARM_CONVERTERS` map each enum member to a small
numpy function. Out-of-range values raise (naming dataset, episode and value) instead of being
clipped.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vla.data.errors import DataError
from vla.data.registry import (ARM_DIMS, ArmLayout, DatasetEntry, FieldRef, Gripper, LanguageEncoding)


@dataclasses.dataclass(frozen=True)
class StdEpisode:
    """A standardized episode; images stay encoded (bytes per step) until a frame is sampled."""

    dataset: str
    episode_id: str
    images: dict[str, np.ndarray]  # role -> object array [T] of encoded image bytes
    state: np.ndarray  # float32 [T, S] (S may be 0)
    action: np.ndarray  # float32 [T, A]
    instructions: np.ndarray  # object array [T] of str

    def __len__(self) -> int:
        return int(self.action.shape[0])


def _range_check(x: np.ndarray, lo: float, hi: float, what: str) -> None:
    bad = (x < lo - 1e-6) | (x > hi + 1e-6)
    if bad.any():
        raise DataError(f"{what}: gripper value {float(x[bad][0])} outside [{lo}, {hi}] expected by its convention; "
                        "fix the registry entry's gripper_convention")


def _relative_to_absolute(x: np.ndarray, what: str) -> np.ndarray:
    """+1 close, -1 open, 0 keep -> absolute 1 = open; before the first command the hand is in the
    opposite state of that command."""
    _range_check(x, -1, 1, what)
    cmd = np.sign(np.round(x))
    nonzero = np.flatnonzero(cmd)
    state = 1.0 if len(nonzero) == 0 else float(cmd[nonzero[0]] > 0)  # first command "close" -> was open
    out = np.empty_like(x)
    for i, c in enumerate(cmd):
        if c != 0:
            state = float(c < 0)
        out[i] = state
    return out


def _checked(fn: Callable[[np.ndarray], np.ndarray], lo: float, hi: float):
    def convert(x: np.ndarray, what: str) -> np.ndarray:
        _range_check(x, lo, hi, what)
        return fn(x)
    return convert


# convention -> (source values [T] -> [T] in [0, 1] with 1 = open)
GRIPPER_CONVERTERS: dict[Gripper, Callable[[np.ndarray, str], np.ndarray]] = {
    Gripper.ONE_IS_OPEN: _checked(lambda x: x, 0, 1),
    Gripper.ONE_IS_CLOSED: _checked(lambda x: 1 - x, 0, 1),
    Gripper.POSITIVE_IS_OPEN: _checked(lambda x: np.maximum(x, 0), -1, 1),  # sign carries the command
    Gripper.POSITIVE_IS_CLOSED: _checked(lambda x: 1 - np.maximum(x, 0), -1, 1),
    Gripper.RELATIVE_POSITIVE_IS_CLOSED: _relative_to_absolute,
}
CONSTANT_GRIPPER = {Gripper.ALWAYS_OPEN: 1.0, Gripper.ALWAYS_CLOSED: 0.0}


def quat_to_euler(q: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternions [..., 4] -> roll, pitch, yaw [..., 3] (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1, 1))  # rounding can push |sin| a hair past 1
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([roll, pitch, yaw], -1)


def axis_angle_to_euler(v: np.ndarray) -> np.ndarray:
    """Axis-angle vectors [..., 3] -> roll, pitch, yaw [..., 3]."""
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = np.where(angle > 1e-12, v / np.maximum(angle, 1e-12), 0.0)
    q = np.concatenate([axis * np.sin(angle / 2), np.cos(angle / 2)], -1)
    return quat_to_euler(q)


def _pad(arm: np.ndarray, after: int) -> np.ndarray:
    return np.concatenate([arm, np.zeros((arm.shape[0], after), arm.dtype)], -1)


# layout -> (concatenated arm parts [T, ARM_DIMS[layout]] -> xyz + roll/pitch/yaw [T, 6])
ARM_CONVERTERS: dict[ArmLayout, Callable[[np.ndarray], np.ndarray]] = {
    ArmLayout.XYZ_RPY: lambda a: a,
    ArmLayout.XYZ_QUAT: lambda a: np.concatenate([a[:, :3], quat_to_euler(a[:, 3:7])], -1),
    ArmLayout.XYZ_AXIS_ANGLE: lambda a: np.concatenate([a[:, :3], axis_angle_to_euler(a[:, 3:6])], -1),
    ArmLayout.XYZ: lambda a: _pad(a, 3),
    ArmLayout.XY: lambda a: _pad(a, 4),
}


def take(steps: dict[str, np.ndarray], ref: FieldRef, where: str) -> np.ndarray:
    """The per-step values of `ref` as float32 [T, D] (scalars become D = 1)."""
    if ref.key not in steps:
        raise DataError(f"{where}: step feature {ref.key!r} is missing; present: {sorted(steps)}")
    x = np.asarray(steps[ref.key])
    x = x.reshape(x.shape[0], -1).astype(np.float32)
    return x[:, ref.start:ref.stop]


def _instructions(entry: DatasetEntry, steps: dict[str, np.ndarray], length: int) -> np.ndarray:
    if entry.language_encoding is LanguageEncoding.NONE:
        return np.full(length, "", dtype=object)
    raw = steps[entry.language_key]
    if entry.language_encoding is LanguageEncoding.STRING:
        return np.array([s.decode() if isinstance(s, bytes) else str(s) for s in raw], dtype=object)
    # fixed-length UTF-8 bytes padded with zeros
    return np.array([bytes(np.asarray(row, np.int64)[np.asarray(row) != 0].astype(np.uint8)).decode()
                     for row in raw], dtype=object)


def standardize(entry: DatasetEntry, steps: dict[str, np.ndarray], episode_id: str) -> StdEpisode:
    """Apply `entry` to one episode's flattened raw steps (`"observation/state" -> [T, ...]`)."""
    where = f"{entry.name} episode {episode_id}"
    spec = entry.action
    arm = np.concatenate([take(steps, r, where) for r in spec.arm], -1)
    length = arm.shape[0]
    if spec.layout is ArmLayout.NATIVE:
        action = arm
    else:
        if arm.shape[1] != ARM_DIMS[spec.layout]:
            raise DataError(f"{where}: action parts {[str(r) for r in spec.arm]} give {arm.shape[1]} dims but "
                            f"layout {spec.layout.value!r} needs {ARM_DIMS[spec.layout]}; fix the entry's slices")
        if spec.gripper is not None:
            g = take(steps, spec.gripper, where)
            if g.shape[1] != 1:
                raise DataError(f"{where}: gripper {spec.gripper} has {g.shape[1]} dims; slice it to one")
            gripper = GRIPPER_CONVERTERS[spec.gripper_convention](g[:, 0], where)
        else:
            gripper = np.full(length, CONSTANT_GRIPPER[spec.gripper_convention], np.float32)
        action = np.concatenate([ARM_CONVERTERS[spec.layout](arm), gripper[:, None]], -1)
    state = (np.concatenate([take(steps, r, where) for r in entry.state], -1) if entry.state
             else np.zeros((length, 0), np.float32))
    images = {role: np.asarray(steps[key], dtype=object) for role, key in entry.images.items()}
    return StdEpisode(entry.name, episode_id, images, state.astype(np.float32), action.astype(np.float32),
                      _instructions(entry, steps, length))
