"""The Open X-Embodiment registry and mixtures, read from data files in `datasets/`.

An entry says where a dataset keeps its cameras, state, action parts and instruction, and which
*conventions* they follow (enums below). One engine (`vla.data.standardize`) applies any entry;
a new dataset is a new entry, a new convention is a new enum member plus its converter.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import pathlib
import re
import tomllib
from typing import Any

from vla.data.errors import RegistryError, UnknownDatasetError
from vla.data.rlds_writer import ROLES

DATASETS_DIR = pathlib.Path(__file__).resolve().parents[2] / "datasets"
REGISTRY_PATH = DATASETS_DIR / "oxe.toml"
MIXTURES_PATH = DATASETS_DIR / "mixtures.toml"


class ActionEncoding(enum.Enum):
    """What the arm part of an action means."""

    EEF_DELTA = "eef_delta"  # end-effector displacement per step
    EEF_VELOCITY = "eef_velocity"  # end-effector twist (treated like a delta at the control rate)
    EEF_ABSOLUTE = "eef_absolute"  # absolute end-effector pose targets
    JOINT_POSITION = "joint_position"  # absolute joint targets (kept native)
    JOINT_DELTA = "joint_delta"  # joint displacements (kept native)
    NATIVE = "native"  # our own standardized datasets: the action is used as written


class ArmLayout(enum.Enum):
    """How the concatenated arm parts are laid out; value = number of dims."""

    XYZ_RPY = "xyz_rpy"  # 6: translation + roll/pitch/yaw
    XYZ_QUAT = "xyz_quat"  # 7: translation + quaternion (x, y, z, w) -> converted to roll/pitch/yaw
    XYZ_AXIS_ANGLE = "xyz_axis_angle"  # 6: translation + axis-angle vector -> converted to roll/pitch/yaw
    XYZ = "xyz"  # 3: translation only; rotation padded with zeros
    XY = "xy"  # 2: planar pushing; z and rotation padded with zeros
    NATIVE = "native"  # any number of dims, kept as they are (joint or standardized datasets)


# Names of the standardized 7-dim end-effector action's dims, in order; `motion_words` keys use them.
MOTION_AXES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")

ARM_DIMS = {ArmLayout.XYZ_RPY: 6, ArmLayout.XYZ_QUAT: 7, ArmLayout.XYZ_AXIS_ANGLE: 6, ArmLayout.XYZ: 3,
            ArmLayout.XY: 2}


class Gripper(enum.Enum):
    """The source's gripper convention; every one is converted to [0, 1] with 1 = open."""

    ONE_IS_OPEN = "one_is_open"  # [0, 1], 1 = open (Bridge)
    ONE_IS_CLOSED = "one_is_closed"  # [0, 1], 1 = closed
    POSITIVE_IS_OPEN = "positive_is_open"  # [-1, 1]: > 0 opens, <= 0 closes
    POSITIVE_IS_CLOSED = "positive_is_closed"  # [-1, 1]: > 0 closes, <= 0 opens (robosuite/robomimic)
    RELATIVE_POSITIVE_IS_CLOSED = "relative_positive_is_closed"  # +1 close, -1 open, 0 keep (RT-1)
    ALWAYS_OPEN = "always_open"  # no gripper in the data; the hand stays open
    ALWAYS_CLOSED = "always_closed"  # no gripper in the data; the hand stays closed
    NONE = "none"  # no gripper dimension is appended (native layouts)


class StateEncoding(enum.Enum):
    """What the concatenated proprio state means (for people and masks; values are kept)."""

    EEF_EULER = "eef_euler"
    EEF_QUAT = "eef_quat"
    JOINT = "joint"
    NONE = "none"  # the dataset has no usable state
    NATIVE = "native"


class LanguageEncoding(enum.Enum):
    """How the instruction is stored."""

    STRING = "string"  # a tfds Text feature
    UTF8_BYTES = "utf8_bytes"  # a fixed-length int array of UTF-8 bytes padded with zeros
    NONE = "none"  # no instruction; frames carry ""


_PATH = re.compile(r"^(?P<key>[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
_SPEC = re.compile(r"^(?P<dtype>bool|string|u?int(?:8|16|32|64)|float(?:16|32|64))(?:\[(?P<shape>[\d, ]*)\])?$")


@dataclasses.dataclass(frozen=True)
class FieldRef:
    """A step feature path with an optional slice of its last axis, e.g. `observation/state[:6]`."""

    key: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str, where: str) -> "FieldRef":
        """Parse `path[start:stop]`."""
        m = _PATH.match(text) if isinstance(text, str) else None
        if not m:
            raise RegistryError(f"{where}: {text!r} is not a step feature path like 'observation/state[:6]'")
        num = lambda s: int(s) if s else None  # noqa: E731
        return cls(m["key"], num(m["start"]), num(m["stop"]))

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.key
        return f"{self.key}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The declared dtype and per-step shape of one raw feature."""

    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def parse(cls, text: str, where: str) -> "FeatureSpec":
        """Parse `float32[7]`, `string`, `bool`, `int32[512]`."""
        m = _SPEC.match(text) if isinstance(text, str) else None
        if not m:
            raise RegistryError(f"{where}: {text!r} is not a feature spec like 'float32[7]', 'bool' or 'string'")
        shape = tuple(int(d) for d in m["shape"].split(",") if d.strip()) if m["shape"] else ()
        return cls(m["dtype"], shape)

    def __str__(self) -> str:
        return self.dtype + (f"[{','.join(map(str, self.shape))}]" if self.shape else "")


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """Where the action parts are and which conventions they follow."""

    encoding: ActionEncoding
    arm: tuple[FieldRef, ...]
    layout: ArmLayout
    gripper: FieldRef | None
    gripper_convention: Gripper


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the registry, parsed and checked."""

    name: str
    images: dict[str, str]  # role -> step feature path of an image
    state: tuple[FieldRef, ...]
    state_encoding: StateEncoding
    action: ActionSpec
    language_key: str | None
    language_encoding: LanguageEncoding
    control_hz: float
    features: dict[str, FeatureSpec]  # declared raw step features other than images
    robot: str = ""
    note: str = ""  # where the schema comes from, and what we are unsure of
    # RT-H motion words per axis of the standardized action: axis -> (word for -, word for +); empty: defaults
    motion_words: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # the TOML table

    @property
    def action_dim(self) -> int | None:
        """7 for end-effector layouts; None (= the data's own) for native layouts."""
        return None if self.action.layout is ArmLayout.NATIVE else 7

    def content_hash(self) -> str:
        """A hash of this entry's content; statistics caches are keyed by it."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _enum(cls: type[enum.Enum], value: Any, where: str):
    try:
        return cls(value)
    except ValueError:
        allowed = [m.value for m in cls]
        near = difflib.get_close_matches(str(value), allowed, n=1)
        raise RegistryError(f"{where}: {value!r} is not a {cls.__name__}; allowed: {allowed}"
                            + (f" (did you mean {near[0]!r}?)" if near else "")) from None


def _require(table: dict, key: str, where: str) -> Any:
    if key not in table:
        raise RegistryError(f"{where}: missing required key {key!r}")
    return table[key]


_ENTRY_KEYS = {"images", "state", "state_encoding", "action", "language", "control_hz", "features", "robot", "note",
               "motion_words"}
_ACTION_KEYS = {"encoding", "arm", "layout", "gripper", "gripper_convention"}


def _motion_words(table: Any, where: str) -> dict[str, tuple[str, str]]:
    """`motion_words = { x = ["move arm backward", "move arm forward"], ... }`, checked."""
    if not isinstance(table, dict):
        raise RegistryError(f"{where}: motion_words must be a table axis -> [word for -, word for +]")
    out = {}
    for axis, pair in table.items():
        if axis not in MOTION_AXES:
            raise RegistryError(f"{where}: motion_words axis {axis!r} is not one of {MOTION_AXES}")
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(w, str) and w.strip() for w in pair)):
            raise RegistryError(f"{where}: motion_words.{axis} = {pair!r} must be two non-empty words "
                                '[for -, for +], e.g. ["move arm down", "move arm up"]')
        out[axis] = (pair[0].strip(), pair[1].strip())
    return out


def parse_entry(name: str, table: dict, source: str = "<entry>") -> DatasetEntry:
    """Parse and check one registry table; unknown words raise naming the allowed ones."""
    where = f"{source} [{name}]"
    unknown = set(table) - _ENTRY_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    images = dict(_require(table, "images", where))
    for role in images:
        if role not in ROLES:
            raise RegistryError(f"{where}: image role {role!r} is not one of {ROLES}")
    if "primary" not in images:
        raise RegistryError(f"{where}: images needs a 'primary' camera")
    act = dict(_require(table, "action", where))
    unknown = set(act) - _ACTION_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown action keys {sorted(unknown)}; allowed: {sorted(_ACTION_KEYS)}")
    convention = _enum(Gripper, _require(act, "gripper_convention", where + " action"), where + " action")
    gripper = FieldRef.parse(act["gripper"], where + " action.gripper") if "gripper" in act else None
    sourceless = (Gripper.ALWAYS_OPEN, Gripper.ALWAYS_CLOSED, Gripper.NONE)
    if (gripper is None) != (convention in sourceless):
        raise RegistryError(f"{where}: action.gripper must be given exactly when gripper_convention is not one of "
                            f"{[g.value for g in sourceless]}")
    action = ActionSpec(
        encoding=_enum(ActionEncoding, _require(act, "encoding", where), where + " action.encoding"),
        arm=tuple(FieldRef.parse(p, where + " action.arm") for p in _require(act, "arm", where)),
        layout=_enum(ArmLayout, _require(act, "layout", where), where + " action.layout"),
        gripper=gripper,
        gripper_convention=convention,
    )
    if (action.layout is ArmLayout.NATIVE) != (convention is Gripper.NONE):
        raise RegistryError(f"{where}: layout 'native' keeps the action as it is and goes with gripper_convention "
                            "'none' (list the gripper in action.arm); the 7-dim layouts need a gripper convention")
    lang = dict(_require(table, "language", where))
    lang_enc = _enum(LanguageEncoding, _require(lang, "encoding", where + " language"), where + " language")
    if (lang_enc is LanguageEncoding.NONE) != ("key" not in lang):
        raise RegistryError(f"{where}: language.key must be given unless language.encoding is 'none'")
    features = {k: FeatureSpec.parse(v, f"{where} features.{k}") for k, v in dict(table.get("features", {})).items()}
    motion_words = _motion_words(table.get("motion_words", {}), where)
    entry = DatasetEntry(
        name=name,
        images=images,
        state=tuple(FieldRef.parse(p, where + " state") for p in table.get("state", [])),
        state_encoding=_enum(StateEncoding, table.get("state_encoding", "none"), where + " state_encoding"),
        action=action,
        language_key=lang.get("key"),
        language_encoding=lang_enc,
        control_hz=float(_require(table, "control_hz", where)),
        features=features,
        robot=str(table.get("robot", "")),
        note=str(table.get("note", "")),
        motion_words=motion_words,
        raw=table,
    )
    # Every non-image path the entry reads must be declared, so a test can build the shard from it.
    used = [*entry.state, *action.arm, *([gripper] if gripper else [])]
    if entry.language_key:
        used.append(FieldRef(entry.language_key))
    for ref in used:
        if ref.key not in features:
            raise RegistryError(f"{where}: {ref.key!r} is used but not declared in features; add e.g. "
                                f"\"{ref.key}\" = \"float32[7]\"")
    return entry


@dataclasses.dataclass(frozen=True)
class Registry:
    """All entries of one registry file."""

    path: pathlib.Path
    entries: dict[str, DatasetEntry]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str, extra_known: tuple[str, ...] = ()) -> DatasetEntry:
        """The entry `name`; an unknown name raises with close matches."""
        if name not in self.entries:
            known = sorted({*self.entries, *extra_known})
            near = difflib.get_close_matches(name, known, n=3)
            raise UnknownDatasetError(
                f"dataset {name!r} is not in {self.path} and is not a standardized-schema dataset; "
                f"did you mean {near}? Add an entry (copy bridge_dataset) or write the data with "
                f"`vla data convert`. Known: {', '.join(known)}")
        return self.entries[name]


def load_registry(path: str | pathlib.Path = REGISTRY_PATH) -> Registry:
    """Parse a registry TOML file."""
    path = pathlib.Path(path)
    try:
        tables = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise RegistryError(f"registry file {path} does not exist; pass the path of an oxe.toml-style file") from e
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"registry file {path} is not valid TOML: {e}") from e
    return Registry(path, {name: parse_entry(name, dict(t), str(path)) for name, t in tables.items()})


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Named dataset weights; sampling goes by weight x dataset size."""

    name: str
    weights: dict[str, float]


def load_mixtures(path: str | pathlib.Path = MIXTURES_PATH) -> dict[str, Mixture]:
    """Parse a mixtures TOML file: `[name]` tables of `dataset = weight`."""
    path = pathlib.Path(path)
    try:
        tables = tomllib.loads(path.read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError) as e:
        raise RegistryError(f"mixtures file {path} cannot be read: {e}") from e
    out = {}
    for name, table in tables.items():
        bad = {k: v for k, v in table.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0}
        if bad or not table:
            raise RegistryError(f"{path} [{name}]: weights must be positive numbers; bad: {bad or 'empty mixture'}")
        out[name] = Mixture(name, {k: float(v) for k, v in table.items()})
    return out


def resolve_mixture(name_or_dataset: str, mixtures: dict[str, Mixture]) -> Mixture:
    """A named mixture, or a single-dataset mixture of weight 1 for any other name."""
    return mixtures.get(name_or_dataset) or Mixture(name_or_dataset, {name_or_dataset: 1.0})
