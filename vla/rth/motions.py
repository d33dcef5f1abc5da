"""RT-H language motions labelled from end-effector actions (or poses), and read back per axis.

RT-H (Belkhale et al. 2024) labels each step with the words of the end-effector's coming motion:
every axis of the pose change whose magnitude survives a threshold gives a phrase ("move arm
forward", "close gripper"), the phrases are joined in order of magnitude, and "stop" stands where
nothing survives. Thresholds are unpublished; ours are a fraction of the dataset's own spread
(max |q01|, |q99| per arm axis, q99 - q01 for the absolute gripper) or absolute numbers.

Signals, one row per step, laid out as the standardized 7-dim action (`MOTION_AXES`):
- `action` source: arm dims are per-step deltas; the window mean of steps t..t+W-1 says where the
  arm is going. The gripper is absolute (1 = open): its change from the step before t to the last
  step of the window says whether it is about to open or close.
- `proprio` source: end-effector poses; the arm signal is the per-step pose change (angles wrapped),
  the gripper signal the measured opening, then the same windowing.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from vla.data.registry import MOTION_AXES
from vla.rth.errors import MotionError, MotionSpecError

logger = logging.getLogger(__name__)

STOP = "stop"  # the motion where no axis survives its threshold
JOINER = " and "  # between the phrases of one motion, largest first
GRIPPER = MOTION_AXES.index("gripper")
DEFAULT_WINDOW = 3
DEFAULT_THRESHOLD = 0.3  # fraction of each axis' spread

# axis -> (phrase for a negative change, phrase for a positive one), for the standardized action of
# a right-handed base frame with x forward, y left, z up, and the gripper 1 = open. A registry entry
# whose frame differs overrides axes with `motion_words`.
DEFAULT_WORDS: dict[str, tuple[str, str]] = {
    "x": ("move arm backward", "move arm forward"),
    "y": ("move arm right", "move arm left"),
    "z": ("move arm down", "move arm up"),
    "roll": ("roll arm left", "roll arm right"),
    "pitch": ("tilt arm up", "tilt arm down"),
    "yaw": ("rotate arm right", "rotate arm left"),  # + yaw turns counter-clockwise seen from above
    "gripper": ("close gripper", "open gripper"),
}


class MotionSource(enum.Enum):
    """Which per-step signal the words describe."""

    ACTION = "action"  # standardized end-effector delta actions
    PROPRIO = "proprio"  # end-effector poses (xyz, roll/pitch/yaw, gripper opening)


@dataclasses.dataclass(frozen=True)
class MotionSpec:
    """How to turn a [T, 7] signal into motions: window, absolute per-axis thresholds, words."""

    thresholds: tuple[float, ...]  # per axis of MOTION_AXES, in the signal's units
    window: int = DEFAULT_WINDOW
    words: tuple[tuple[str, str], ...] = tuple(DEFAULT_WORDS[a] for a in MOTION_AXES)
    source: MotionSource = MotionSource.ACTION

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise MotionSpecError(f"window must be an integer >= 1 (steps looked ahead), got {self.window!r}")
        if len(self.thresholds) != len(MOTION_AXES) or len(self.words) != len(MOTION_AXES):
            raise MotionSpecError(f"need one threshold and one word pair per axis {MOTION_AXES}; got "
                                  f"{len(self.thresholds)} thresholds and {len(self.words)} word pairs")
        bad = [f"{a}={t!r}" for a, t in zip(MOTION_AXES, self.thresholds) if not (np.isfinite(t) and t > 0)]
        if bad:
            raise MotionSpecError(f"thresholds must be finite and > 0, got {', '.join(bad)}; pass a positive "
                                  "--threshold (a fraction of each axis' spread, e.g. 0.3)")

    @classmethod
    def absolute(cls, thresholds: float | Sequence[float], window: int = DEFAULT_WINDOW,
                 words: Mapping[str, tuple[str, str]] | None = None,
                 source: MotionSource = MotionSource.ACTION) -> "MotionSpec":
        """Thresholds in the signal's units (one for every axis, or one per axis)."""
        values = np.broadcast_to(np.asarray(thresholds, np.float64), (len(MOTION_AXES),)) \
            if np.ndim(thresholds) == 0 else np.asarray(thresholds, np.float64)
        return cls(tuple(float(v) for v in values), window, word_table(words), source)

    @classmethod
    def relative(cls, q01: Sequence[float], q99: Sequence[float], fraction: float = DEFAULT_THRESHOLD,
                 window: int = DEFAULT_WINDOW, words: Mapping[str, tuple[str, str]] | None = None,
                 source: MotionSource = MotionSource.ACTION) -> "MotionSpec":
        """Thresholds = `fraction` x each axis' spread in the data (q01/q99 of the signal)."""
        if not (np.isfinite(fraction) and fraction > 0):
            raise MotionSpecError(f"threshold fraction must be > 0, got {fraction!r}; e.g. --threshold 0.3")
        q01, q99 = np.asarray(q01, np.float64), np.asarray(q99, np.float64)
        if q01.shape != (len(MOTION_AXES),) or q99.shape != q01.shape:
            raise MotionSpecError(f"statistics must have {len(MOTION_AXES)} dims {MOTION_AXES}; got q01 "
                                  f"{q01.shape} and q99 {q99.shape}. RT-H labels the standardized 7-dim action")
        spread = np.maximum(np.abs(q01), np.abs(q99))  # deltas: how far a typical big step goes either way
        spread[GRIPPER] = q99[GRIPPER] - q01[GRIPPER]  # absolute gripper: its open-to-closed range
        flat = [a for a, s in zip(MOTION_AXES, spread) if not s > 0]
        if flat:
            # an axis that never moves in the data (e.g. no rotation): any motion on it is news, so
            # the smallest non-zero spread stands in rather than a zero threshold
            moving = spread[spread > 0]
            if not moving.size:
                raise MotionSpecError("every axis has zero spread in the statistics; the data never moves")
            logger.info("axes %s never move in the data; their threshold uses the smallest other spread", flat)
            spread = np.where(spread > 0, spread, moving.min())
        return cls.absolute(fraction * spread, window, words, source)


def word_table(words: Mapping[str, tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    """DEFAULT_WORDS overridden by `words` (axis -> (negative, positive)), in MOTION_AXES order."""
    words = dict(words or {})
    unknown = set(words) - set(MOTION_AXES)
    if unknown:
        raise MotionSpecError(f"motion words for unknown axes {sorted(unknown)}; axes are {MOTION_AXES}")
    table = tuple(tuple(words.get(a, DEFAULT_WORDS[a])) for a in MOTION_AXES)
    phrases = [p for pair in table for p in pair]
    if len(set(phrases)) != len(phrases) or STOP in phrases or any(JOINER.strip() in p.split() for p in phrases):
        raise MotionSpecError(f"motion words must be distinct, not {STOP!r}, and not contain "
                              f"{JOINER.strip()!r}; got {table}")
    return table  # type: ignore[return-value]


def pose_deltas(poses: np.ndarray) -> np.ndarray:
    """End-effector poses [T, 7] -> the proprio signal: per-step pose change (wrapped angles), gripper as is."""
    poses = np.asarray(poses, np.float64)
    signal = np.zeros_like(poses)
    if len(poses) > 1:
        step = np.diff(poses[:, :6], axis=0)
        step[:, 3:6] = (step[:, 3:6] + np.pi) % (2 * np.pi) - np.pi  # -pi..pi: a wrap is a small turn
        signal[:-1, :6] = step  # the last pose has no next one: no arm motion
    signal[:, GRIPPER] = poses[:, GRIPPER]
    return signal


def motion_values(signal: np.ndarray, window: int) -> np.ndarray:
    """Per-step, per-axis motion [T, 7]: arm window means, gripper change across the window."""
    signal = np.asarray(signal, np.float64)
    t = len(signal)
    csum = np.concatenate([np.zeros((1, signal.shape[1])), np.cumsum(signal, axis=0)])
    start = np.arange(t)
    stop = np.minimum(start + window, t)
    values = (csum[stop] - csum[start]) / (stop - start)[:, None]
    g = signal[:, GRIPPER]
    before = g[np.maximum(start - 1, 0)]  # the gripper as it was before step t acted
    values[:, GRIPPER] = g[stop - 1] - before
    return values


def label_motions(actions: np.ndarray, spec: MotionSpec) -> list[str]:
    """One motion per step of a [T, 7] standardized action (or pose) array, as RT-H words."""
    x = np.asarray(actions)
    if x.ndim != 2 or x.shape[1] != len(MOTION_AXES) or x.shape[0] == 0 or x.dtype.kind not in "fiu":
        raise MotionSpecError(f"actions must be a numeric array [T>=1, {len(MOTION_AXES)}] laid out as "
                              f"{MOTION_AXES}; got dtype {x.dtype} shape {x.shape}")
    if not np.isfinite(x).all():
        raise MotionSpecError(f"actions contain NaN or inf at step {int(np.argwhere(~np.isfinite(x))[0, 0])}")
    signal = pose_deltas(x) if spec.source is MotionSource.PROPRIO else x
    strength = motion_values(signal, spec.window) / np.asarray(spec.thresholds)
    motions = []
    for row in strength:
        axes = [i for i in np.argsort(-np.abs(row), kind="stable") if abs(row[i]) >= 1.0]
        motions.append(JOINER.join(spec.words[i][int(row[i] > 0)] for i in axes) or STOP)
    return motions


def motion_axes(motion: str, words: Sequence[tuple[str, str]] | None = None) -> dict[str, int] | None:
    """Read a motion back as axis -> -1/0/+1; None when a phrase is not in the vocabulary of `words`."""
    text = check_motion(motion).strip().lower()
    words = tuple(words or word_table(None))
    out = dict.fromkeys(MOTION_AXES, 0)
    if text == STOP:
        return out
    lookup = {phrase: (axis, sign) for axis, pair in zip(MOTION_AXES, words) for sign, phrase in zip((-1, 1), pair)}
    for phrase in text.split(JOINER):
        if phrase not in lookup:
            return None
        axis, sign = lookup[phrase]
        out[axis] = sign
    return out


def check_motion(motion: object) -> str:
    """A motion string with words in it, else MotionError."""
    if not isinstance(motion, str):
        raise MotionError(f"a motion must be a string such as 'move arm forward', got {type(motion).__name__}")
    if not motion.strip():
        raise MotionError("the motion is empty; give words such as 'move arm left' or 'close gripper', "
                          "or no motion at all to let the policy choose")
    return motion


def vocabulary(motions: Iterable[str]) -> collections.Counter:
    """How often each distinct motion occurs."""
    return collections.Counter(motions)


def format_histogram(counts: collections.Counter, width: int = 40) -> str:
    """The vocabulary histogram as text lines, most frequent first."""
    if not counts:
        return "(no motions)"
    total, top = sum(counts.values()), max(counts.values())
    pad = max(len(m) for m in counts)
    lines = [f"{len(counts)} distinct motions over {total} steps"]
    for motion, n in counts.most_common():
        lines.append(f"{motion:<{pad}}  {n:>6}  {100 * n / total:5.1f}%  {'#' * max(1, round(width * n / top))}")
    return "\n".join(lines)
