"""Write episodes as real tensorflow-datasets RLDS shards in our standardized schema.

One writer serves the converter, the sim collector and the hardware recorder. The result,
`<root>/<name>/<version>/` with `dataset_info.json`, `features.json` and tfrecord shards, loads
with `tfds.builder_from_directory` exactly like a published Open X-Embodiment dataset. No
dataset builder class and no network: examples are serialized with the tfds feature
connectors, written with `tf.io.TFRecordWriter`, and described with
`tfds.folder_dataset.write_metadata`.

Standardized schema (what `vla.data` reads without a registry entry):
  steps/observation/image_<role>   uint8 [H, W, 3] (JPEG or PNG), roles from `ROLES`
  steps/observation/state          float32 [S]
  steps/action                     float32 [A]
  steps/language_instruction       text
  steps/reward, steps/discount     float32 (reward 1 on the last step unless success is False)
  steps/is_first, is_last, is_terminal   bool
  steps/<extra>                    any extra per-step field
  episode_metadata/episode_id      int32 (index in this dataset)
  episode_metadata/success         bool, with episode_metadata/success_known (False for None)
  episode_metadata/file_path       text (metadata["file_path"] or "<name>/episode_<i>")
  episode_metadata/<key>           any further scalar metadata
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from vla.data.errors import DatasetExistsError, EpisodeError

logger = logging.getLogger(__name__)

ROLES = ("primary", "secondary", "wrist")  # camera roles, in the order the model stacks them
IMAGE_ENCODINGS = ("jpeg", "png")
JPEG_QUALITY = 95  # near-lossless; OXE shards are JPEG too
SHARD_MAX_BYTES = 64 * 2**20  # start a new tfrecord shard past this size (several shards -> parallel reads)
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
SPLIT = "train"
# Step and metadata keys the writer fills itself; extras/metadata may not reuse them.
STEP_KEYS = frozenset({"observation", "action", "language_instruction", "reward", "discount",
                       "is_first", "is_last", "is_terminal"})
METADATA_KEYS = frozenset({"episode_id", "success", "success_known"})


@dataclasses.dataclass(frozen=True)
class Episode:
    """One demonstration: per-step images by role, state, action, and its instruction."""

    images: dict[str, np.ndarray]  # role -> uint8 [T, H, W, 3]
    state: np.ndarray  # float32 [T, S]
    action: np.ndarray  # float32 [T, A]
    instruction: str
    success: bool | None = None  # None: not known (e.g. converted demos)
    extras: dict[str, np.ndarray | list] = dataclasses.field(default_factory=dict)  # per-step fields
    metadata: dict = dataclasses.field(default_factory=dict)  # scalar str/int/float/bool per episode

    def __len__(self) -> int:
        return int(np.shape(self.action)[0])


@dataclasses.dataclass(frozen=True)
class _Schema:
    """The feature layout of a dataset, taken from its first episode; every episode must match."""

    images: dict[str, tuple[int, int]]
    state_dim: int
    action_dim: int
    extras: dict[str, tuple[str, tuple[int, ...]]]  # name -> (numpy dtype name or "text", per-step shape)
    metadata: dict[str, str]  # name -> "text" | "int" | "float" | "bool"

    def features(self, image_encoding: str):
        """The tfds FeaturesDict of this schema."""
        import tensorflow_datasets as tfds

        f = tfds.features
        obs = {f"image_{r}": f.Image(shape=(h, w, 3), dtype=np.uint8, encoding_format=image_encoding)
               for r, (h, w) in self.images.items()}
        obs["state"] = f.Tensor(shape=(self.state_dim,), dtype=np.float32)
        steps: dict[str, Any] = {
            "observation": obs,
            "action": f.Tensor(shape=(self.action_dim,), dtype=np.float32),
            "language_instruction": f.Text(),
            "reward": f.Scalar(dtype=np.float32),
            "discount": f.Scalar(dtype=np.float32),
            "is_first": f.Scalar(dtype=np.bool_),
            "is_last": f.Scalar(dtype=np.bool_),
            "is_terminal": f.Scalar(dtype=np.bool_),
        }
        for key, (dtype, shape) in self.extras.items():
            steps[key] = f.Text() if dtype == "text" else f.Tensor(shape=shape, dtype=np.dtype(dtype))
        scalar = {"int": np.int64, "float": np.float32, "bool": np.bool_}
        meta: dict[str, Any] = {
            "episode_id": f.Scalar(dtype=np.int32),
            "success": f.Scalar(dtype=np.bool_),
            "success_known": f.Scalar(dtype=np.bool_),
            "file_path": f.Text(),
        }
        for key, kind in self.metadata.items():
            meta[key] = f.Text() if kind == "text" else f.Scalar(dtype=scalar[kind])
        return f.FeaturesDict({"steps": f.Dataset(steps), "episode_metadata": meta})


def _metadata_kind(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "text"
    return None


def _extra_spec(key: str, value: Any, steps: int, where: str) -> tuple[str, tuple[int, ...]]:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) != steps:
            raise EpisodeError(f"{where}: extra {key!r} has {len(value)} entries for {steps} steps; give one per step")
        return "text", ()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.shape[0] != steps:
        raise EpisodeError(
            f"{where}: extra {key!r} must be a per-step numeric array [T={steps}, ...] or a list of "
            f"{steps} strings; got dtype {arr.dtype} shape {arr.shape}")
    return arr.dtype.name, tuple(int(d) for d in arr.shape[1:])


def _schema_of(ep: Episode, where: str) -> _Schema:
    """Validate one episode on its own and return the schema it implies."""
    if not isinstance(ep, Episode):
        raise EpisodeError(f"{where}: expected a vla.data.rlds_writer.Episode, got {type(ep).__name__}")
    action, state = np.asarray(ep.action), np.asarray(ep.state)
    if action.ndim != 2 or action.shape[0] == 0 or action.dtype.kind != "f":
        raise EpisodeError(f"{where}: action must be a float array [T>=1, A]; got dtype {action.dtype} "
                           f"shape {action.shape}")
    steps = action.shape[0]
    if state.ndim != 2 or state.shape[0] != steps or state.dtype.kind != "f":
        raise EpisodeError(f"{where}: state must be a float array [T={steps}, S] like the action; got dtype "
                           f"{state.dtype} shape {state.shape}")
    for name, arr in (("action", action), ("state", state)):
        if not np.isfinite(arr).all():
            raise EpisodeError(f"{where}: {name} contains NaN or inf at step "
                               f"{int(np.argwhere(~np.isfinite(arr))[0, 0])}; fix the source data")
    if not ep.images:
        raise EpisodeError(f"{where}: no images; give at least images['primary'] as uint8 [T, H, W, 3]")
    images = {}
    for role, frames in ep.images.items():
        if role not in ROLES:
            raise EpisodeError(f"{where}: unknown camera role {role!r}; use one of {ROLES}")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != steps or frames.shape[3] != 3:
            raise EpisodeError(f"{where}: images[{role!r}] must be uint8 [T={steps}, H, W, 3]; got dtype "
                               f"{frames.dtype} shape {frames.shape}")
        images[role] = (int(frames.shape[1]), int(frames.shape[2]))
    if "primary" not in images:
        raise EpisodeError(f"{where}: images has roles {sorted(images)} but no 'primary'; the model needs one")
    if not isinstance(ep.instruction, str):
        raise EpisodeError(f"{where}: instruction must be a str, got {type(ep.instruction).__name__}")
    if ep.success is not None and not isinstance(ep.success, (bool, np.bool_)):
        raise EpisodeError(f"{where}: success must be True, False or None; got {ep.success!r}")
    extras = {}
    for key, value in ep.extras.items():
        if key in STEP_KEYS or not key.isidentifier():
            raise EpisodeError(f"{where}: extra {key!r} is reserved or not an identifier; rename it "
                               f"(reserved: {sorted(STEP_KEYS)})")
        extras[key] = _extra_spec(key, value, steps, where)
    metadata = {}
    for key, value in ep.metadata.items():
        kind = _metadata_kind(value)
        if key in METADATA_KEYS or not isinstance(key, str) or not key.isidentifier() or kind is None:
            raise EpisodeError(f"{where}: metadata {key!r}={value!r} must have an identifier key not in "
                               f"{sorted(METADATA_KEYS)} and a str/int/float/bool value")
        metadata[key] = kind
    if "file_path" in metadata and metadata["file_path"] != "text":
        raise EpisodeError(f"{where}: metadata['file_path'] must be a str")
    metadata.pop("file_path", None)  # always present as text; filled with a default otherwise
    return _Schema(images, state.shape[1], action.shape[1], extras, metadata)


def _check_same(schema: _Schema, first: _Schema, where: str) -> None:
    if schema != first:
        diffs = [f"{field.name}: {getattr(schema, field.name)} != first episode's {getattr(first, field.name)}"
                 for field in dataclasses.fields(_Schema)
                 if getattr(schema, field.name) != getattr(first, field.name)]
        raise EpisodeError(f"{where} does not match the first episode's layout ({'; '.join(diffs)}); "
                           "every episode of one dataset needs the same cameras, sizes, dims and fields")


def _encode_images(frames: np.ndarray, encoding: str) -> list[bytes]:
    import cv2

    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]) if encoding == "jpeg" else (".png", [])
    out = []
    for frame in frames:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame[..., ::-1]), params)  # cv2 wants BGR
        if not ok:
            raise EpisodeError(f"could not {encoding}-encode a frame of shape {frame.shape}")
        out.append(buf.tobytes())
    return out


def _example(ep: Episode, index: int, name: str, image_encoding: str) -> dict:
    steps = len(ep)
    last = np.arange(steps) == steps - 1
    done = ep.success is not False  # a demo or a success ends in its goal; a failure was cut off
    step: dict[str, Any] = {
        "observation": {f"image_{r}": _encode_images(np.asarray(v), image_encoding) for r, v in ep.images.items()},
        "action": np.asarray(ep.action, np.float32),
        "language_instruction": [ep.instruction] * steps,
        "reward": (last & done).astype(np.float32),
        "discount": np.ones(steps, np.float32),
        "is_first": np.arange(steps) == 0,
        "is_last": last,
        "is_terminal": last & done,
    }
    step["observation"]["state"] = np.asarray(ep.state, np.float32)
    for key, value in ep.extras.items():
        step[key] = value if isinstance(value, list) and value and isinstance(value[0], str) else np.asarray(value)
    meta = {k: v for k, v in ep.metadata.items()}
    meta.update(episode_id=index, success=bool(ep.success), success_known=ep.success is not None)
    meta.setdefault("file_path", f"{name}/episode_{index}")
    return {"steps": step, "episode_metadata": meta}


def write_rlds(
    root: str | os.PathLike,
    name: str,
    episodes: Iterable[Episode],
    *,
    version: str = "1.0.0",
    description: str = "",
    image_encoding: str = "jpeg",
    overwrite: bool = False,
) -> pathlib.Path:
    """Write `episodes` as an RLDS dataset `<root>/<name>/<version>/`, atomically; return that path."""
    if image_encoding not in IMAGE_ENCODINGS:
        raise EpisodeError(f"image_encoding {image_encoding!r} is not one of {IMAGE_ENCODINGS}")
    iterator = iter(enumerate(episodes))
    first_item = next(iterator, None)
    if first_item is None:
        raise EpisodeError(f"no episodes given for dataset {name!r}; nothing was written")
    first = _schema_of(first_item[1], _where(0, first_item[1]))
    features = first.features(image_encoding)

    def examples():
        for index, ep in itertools.chain([first_item], iterator):
            where = _where(index, ep)
            _check_same(_schema_of(ep, where), first, where)
            yield _example(ep, index, name, image_encoding), len(ep)

    return write_examples(root, name, features, examples(), version=version, description=description,
                          overwrite=overwrite)


def _where(index: int, ep: Any) -> str:
    path = ep.metadata.get("file_path") if isinstance(ep, Episode) and isinstance(ep.metadata, dict) else None
    return f"episode {index}" + (f" ({path})" if path else "")


def write_examples(
    root: str | os.PathLike,
    name: str,
    features,
    examples: Iterable[tuple[dict, int]],
    *,
    version: str = "1.0.0",
    description: str = "",
    overwrite: bool = False,
) -> pathlib.Path:
    """Write (example, steps) pairs of any tfds `features` as `<root>/<name>/<version>/`, atomically."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if not name or not name.replace("_", "a").isalnum() or not name[0].isalpha() or name != name.lower():
        raise EpisodeError(f"dataset name {name!r} must be lower-case letters, digits and '_' starting with "
                           "a letter (tfds derives file names from it)")
    if not tfds.core.Version.is_valid(version):
        raise EpisodeError(f"version {version!r} is not of the form MAJOR.MINOR.PATCH, e.g. '1.0.0'")
    dataset_dir = pathlib.Path(root) / name
    final = dataset_dir / version
    if final.exists() and not overwrite:
        raise DatasetExistsError(f"{final} already exists; delete it, pass overwrite=True, or use another version")
    made_parent = not dataset_dir.exists()
    dataset_dir.mkdir(parents=True, exist_ok=True)
    tmp = dataset_dir / f".incomplete-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shard_lengths: list[int] = []
        shard_bytes: list[int] = []
        total_steps = 0
        writer = None
        for example, steps in examples:
            record = features.serialize_example(features.encode_example(example))
            if writer is None or shard_bytes[-1] >= SHARD_MAX_BYTES:
                if writer is not None:
                    writer.close()
                writer = tf.io.TFRecordWriter(str(tmp / f"shard-{len(shard_lengths):05d}.part"))
                shard_lengths.append(0)
                shard_bytes.append(0)
            writer.write(record)
            shard_lengths[-1] += 1
            shard_bytes[-1] += len(record)
            total_steps += steps
        if writer is None:
            raise EpisodeError(f"no episodes given for dataset {name!r}; nothing was written")
        writer.close()
        for i in range(len(shard_lengths)):
            (tmp / f"shard-{i:05d}.part").rename(
                tmp / f"{name}-{SPLIT}.tfrecord-{i:05d}-of-{len(shard_lengths):05d}")
        tfds.folder_dataset.write_metadata(
            data_dir=tmp, features=features, version=version, filename_template=FILENAME_TEMPLATE,
            split_infos=[tfds.core.SplitInfo(name=SPLIT, shard_lengths=shard_lengths, num_bytes=sum(shard_bytes))],
            check_data=False, description=description)
        if final.exists():  # overwrite: swap in the new folder, then drop the old one
            old = dataset_dir / f".old-{version}-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_parent and dataset_dir.is_dir() and not any(dataset_dir.iterdir()):
            dataset_dir.rmdir()
        raise
    logger.info("wrote %d episodes, %d steps, %d shard(s) to %s", sum(shard_lengths), total_steps,
                len(shard_lengths), final)
    return final
