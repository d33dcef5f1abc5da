"""Open RLDS datasets from a local data_dir, check them against their entry, iterate episodes.

A dataset is `<data_dir>/<name>/<version>/` as tensorflow-datasets writes it. Its entry comes from
the registry, or, for datasets in our standardized schema (written by `write_rlds`), is derived
from its features. Files are always found through tfds' metadata, never by globbing shard names.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from vla.data.errors import DataDirError, DataError, SchemaMismatchError, ShardError, UnknownDatasetError
from vla.data.registry import (ActionEncoding, DatasetEntry, Registry, load_registry, parse_entry)
from vla.data.rlds_writer import ROLES
from vla.data.standardize import StdEpisode, standardize

logger = logging.getLogger(__name__)

STANDARD_KEYS = ("observation/image_primary", "observation/state", "action", "language_instruction")


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetSource:
    """An opened dataset: its folder, tfds builder, and the entry that standardizes it."""

    name: str
    path: pathlib.Path  # <data_dir>/<name>/<version>
    entry: DatasetEntry
    builder: Any  # tfds ReadOnlyBuilder
    standardized: bool  # True when the entry was derived from our own schema

    def num_episodes(self, split: str = "train") -> int:
        """Episodes in `split` according to dataset_info.json."""
        return int(self.builder.info.splits[split].num_examples)

    def shard_files(self, split: str = "train") -> list[pathlib.Path]:
        """The tfrecord files of `split`, as dataset_info.json lists them."""
        return [pathlib.Path(str(p)) for p in self.builder.info.splits[split].filepaths]


def step_features(builder) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Flattened step features: path -> (dtype name | "image" | "string", shape)."""
    import tensorflow_datasets as tfds

    out: dict[str, tuple[str, tuple[int, ...]]] = {}

    def walk(feature, prefix: str) -> None:
        if isinstance(feature, tfds.features.FeaturesDict):
            for key, sub in feature.items():
                walk(sub, f"{prefix}{key}/")
            return
        path = prefix[:-1]
        if isinstance(feature, tfds.features.Image):
            out[path] = ("image", tuple(feature.shape))
        elif isinstance(feature, tfds.features.Text):
            out[path] = ("string", ())
        else:
            out[path] = (np.dtype(feature.np_dtype).name, tuple(feature.shape))

    walk(builder.info.features["steps"].feature, "")
    return out


def standardized_entry(name: str, features: dict[str, tuple[str, tuple[int, ...]]]) -> DatasetEntry | None:
    """The entry of a dataset written in our standardized schema, or None if it is not one."""
    if not all(k in features for k in STANDARD_KEYS):
        return None
    table = {
        "images": {r: f"observation/image_{r}" for r in ROLES if f"observation/image_{r}" in features},
        "state": ["observation/state"],
        "state_encoding": "native",
        "action": {"encoding": ActionEncoding.NATIVE.value, "arm": ["action"], "layout": "native",
                   "gripper_convention": "none"},
        "language": {"key": "language_instruction", "encoding": "string"},
        "control_hz": 0,  # not recorded in the schema
        "features": {k: (d if not s else f"{d}[{','.join(map(str, s))}]")
                     for k, (d, s) in features.items() if k in ("observation/state", "action", "language_instruction")},
        "note": "standardized schema written by vla.data.rlds_writer",
    }
    return parse_entry(name, table, "<standardized schema>")


def check_entry(entry: DatasetEntry, features: dict[str, tuple[str, tuple[int, ...]]], path: pathlib.Path,
                source: str) -> None:
    """Raise SchemaMismatchError if the entry names keys the dataset's features lack or type differently."""
    def missing(key: str) -> SchemaMismatchError:
        near = difflib.get_close_matches(key, features, n=3)
        return SchemaMismatchError(
            f"registry entry [{entry.name}] in {source} reads {key!r}, but {path / 'features.json'} has no such "
            f"step feature (close: {near}; all: {sorted(features)}). Fix the entry or pass another registry.")

    for role, key in entry.images.items():
        if key not in features:
            raise missing(key)
        if features[key][0] != "image":
            raise SchemaMismatchError(f"registry entry [{entry.name}] in {source} uses {key!r} as the {role} image, "
                                      f"but {path / 'features.json'} declares it {features[key]}")
    for key, spec in entry.features.items():
        if key not in features:
            raise missing(key)
        dtype, shape = features[key]
        if (dtype, shape) != (spec.dtype, spec.shape):
            raise SchemaMismatchError(
                f"registry entry [{entry.name}] in {source} declares {key!r} as {spec}, but "
                f"{path / 'features.json'} has {dtype}{list(shape) if shape else ''}; fix the entry's features")


def _latest_version(dataset_dir: pathlib.Path) -> pathlib.Path | None:
    import tensorflow_datasets as tfds

    versions = [p for p in dataset_dir.iterdir() if p.is_dir() and tfds.core.Version.is_valid(p.name)
                and (p / "dataset_info.json").is_file()] if dataset_dir.is_dir() else []
    return max(versions, key=lambda p: tfds.core.Version(p.name)) if versions else None


def open_dataset(name: str, data_dir: str | pathlib.Path, registry: Registry | None = None) -> DatasetSource:
    """Open `<data_dir>/<name>/<latest version>/` and pair it with its entry (checked)."""
    import tensorflow_datasets as tfds

    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"data_dir {data_dir} does not exist or is not a folder; pass --data-dir with the "
                           "folder that holds <name>/<version>/dataset_info.json")
    registry = registry or load_registry()
    path = _latest_version(data_dir / name)
    if path is None:
        present = sorted(p.name for p in data_dir.iterdir() if _latest_version(p) is not None)
        near = difflib.get_close_matches(name, [*present, *registry.entries], n=3)
        error = DataDirError if name in registry else UnknownDatasetError
        raise error(f"no dataset {name!r} in {data_dir} (expected {data_dir / name}/<version>/dataset_info.json); "
                    f"did you mean {near}? Datasets there: {present or 'none'}")
    try:
        builder = tfds.builder_from_directory(str(path))
    except Exception as e:  # tfds raises assorted errors for unreadable metadata
        raise ShardError(f"cannot read the tfds metadata in {path}: {e}") from e
    features = step_features(builder)
    entry, standardized = None, False
    if name in registry:
        entry = registry.get(name)
        check_entry(entry, features, path, str(registry.path))
    else:
        entry = standardized_entry(name, features)
        standardized = True
        if entry is None:
            registry.get(name, extra_known=())  # raises UnknownDatasetError with suggestions
    return DatasetSource(name, path, entry, builder, standardized)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def _find_bad_shard(source: DatasetSource, split: str) -> pathlib.Path | None:
    import tensorflow as tf

    for path in source.shard_files(split):
        try:
            for _ in tf.data.TFRecordDataset(str(path)):
                pass
        except tf.errors.OpError:
            return path
    return None


def iter_episodes(source: DatasetSource, split: str = "train", *, shuffle_files: bool = False, seed: int = 0,
                  rank: int = 0, world_size: int = 1, repeat: bool = False) -> Iterator[StdEpisode]:
    """Standardized episodes of `split`; with world_size > 1 each rank reads a distinct part."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if split not in source.builder.info.splits:
        raise UnknownDatasetError(f"{source.path} has no split {split!r}; splits: {list(source.builder.info.splits)}")
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
    if world_size > source.num_episodes(split):
        raise DataError(f"{source.name} has {source.num_episodes(split)} episodes in {split!r}, fewer than "
                         f"world_size={world_size}; every rank needs at least one")
    split_arg = tfds.even_splits(split, n=world_size)[rank] if world_size > 1 else split
    ds = source.builder.as_dataset(
        split=split_arg, shuffle_files=shuffle_files, decoders={"steps": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=False))
    if repeat:
        ds = ds.repeat()
    ds = ds.prefetch(2)
    op_error = tf.errors.OpError  # bound now: a generator closed at interpreter exit finds modules torn down
    try:
        for i, raw in enumerate(tfds.as_numpy(ds)):
            meta = raw.get("episode_metadata", {})
            ident = meta.get("file_path", b"")
            ident = (ident.decode() if isinstance(ident, bytes) else str(ident)) or str(meta.get("episode_id", i))
            if "episode_id" in meta and source.standardized:
                ident = str(int(meta["episode_id"]))
            yield standardize(source.entry, _flatten(raw["steps"]), ident)
    except op_error as e:
        bad = _find_bad_shard(source, split)
        raise ShardError(f"cannot parse shard {bad or 'of ' + str(source.path)} of dataset {source.name!r} "
                         f"({type(e).__name__}: {e.message.splitlines()[0] if e.message else e}); re-copy or "
                         "re-write that file") from e


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3] RGB."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if img is None:
        raise ShardError(f"an image of {len(data)} bytes cannot be decoded as JPEG or PNG")
    return img


def load_frames(name: str, data_dir: str | pathlib.Path, split: str = "train",
                registry: Registry | None = None) -> Iterator[dict]:
    """Standardized frames in file order: images (role -> uint8 HxWx3), state, action, instruction, ids."""
    source = open_dataset(name, data_dir, registry)
    for ep in iter_episodes(source, split):
        for t in range(len(ep)):
            yield {
                "dataset": name,
                "episode_id": ep.episode_id,
                "step": t,
                "images": {role: decode_image(frames[t]) for role, frames in ep.images.items()},
                "state": ep.state[t],
                "action": ep.action[t],
                "instruction": ep.instructions[t],
            }
