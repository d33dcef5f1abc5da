"""Write a synthetic RLDS dataset in the raw schema a registry entry declares.

Tests and the throughput benchmark use it to exercise the real reading path (tfds shards ->
entry -> standardized frames) for every entry without downloading anything. Values follow each
declared convention (e.g. a relative gripper holds -1/0/+1), so standardization succeeds.
"""
from __future__ import annotations

import pathlib

import numpy as np

from vla.data.registry import DatasetEntry, FeatureSpec, Gripper, LanguageEncoding
from vla.data.rlds_writer import write_examples

# values a gripper source may hold under each convention
_GRIPPER_VALUES = {
    Gripper.ONE_IS_OPEN: (0.0, 1.0), Gripper.ONE_IS_CLOSED: (0.0, 1.0),
    Gripper.POSITIVE_IS_OPEN: (-1.0, 1.0), Gripper.POSITIVE_IS_CLOSED: (-1.0, 1.0),
    Gripper.RELATIVE_POSITIVE_IS_CLOSED: (-1.0, 0.0, 1.0),
}


def entry_features(entry: DatasetEntry, image_size: tuple[int, int]):
    """The tfds FeaturesDict of the raw schema `entry` declares (images at `image_size`)."""
    import tensorflow_datasets as tfds

    f = tfds.features
    steps: dict = {}

    def put(path: str, feature) -> None:
        *parents, leaf = path.split("/")
        node = steps
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = feature

    for key in entry.images.values():
        put(key, f.Image(shape=(*image_size, 3), dtype=np.uint8, encoding_format="jpeg"))
    for key, spec in entry.features.items():
        if spec.dtype == "string":
            put(key, f.Text())
        else:
            put(key, f.Tensor(shape=spec.shape, dtype=np.dtype(spec.dtype)))
    return f.FeaturesDict({"steps": f.Dataset(steps),
                           "episode_metadata": {"file_path": f.Text(), "episode_id": f.Scalar(dtype=np.int32)}})


def _values(key: str, spec: FeatureSpec, entry: DatasetEntry, steps: int, rng: np.random.Generator,
            instruction: str):
    if spec.dtype == "string":
        return [instruction] * steps
    if key == entry.language_key and entry.language_encoding is LanguageEncoding.UTF8_BYTES:
        row = np.zeros(spec.shape, np.dtype(spec.dtype))
        data = np.frombuffer(instruction.encode(), np.uint8)
        row[: len(data)] = data
        return np.repeat(row[None], steps, 0)
    shape = (steps, *spec.shape)
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    gripper = entry.action.gripper
    if gripper is not None and key == gripper.key:
        # the whole feature holds legal gripper values, so any slice of it is legal
        return rng.choice(_GRIPPER_VALUES[entry.action.gripper_convention], size=shape).astype(spec.dtype)
    return (rng.normal(size=shape) * 0.1).astype(spec.dtype)


def _frames(steps: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth colour gradients with a moving square: cheap, JPEG-friendly, visibly different per step."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, 3)
    out = np.empty((steps, h, w, 3), np.uint8)
    for t in range(steps):
        img = (base + np.stack([xx * 255 // max(w, 1), yy * 255 // max(h, 1), (xx + yy + 8 * t) % 256], -1)) % 256
        y0, x0 = (t * 3) % max(h - h // 4, 1), (t * 5) % max(w - w // 4, 1)
        img[y0:y0 + h // 4, x0:x0 + w // 4] = 255 - base
        out[t] = img
    return out


def write_synthetic(root: str | pathlib.Path, entry: DatasetEntry, *, num_episodes: int = 2, steps: int = 4,
                    image_size: tuple[int, int] = (32, 32), seed: int = 0, version: str = "1.0.0") -> pathlib.Path:
    """Write `num_episodes` random episodes of `entry`'s raw schema to `<root>/<entry.name>/<version>/`."""
    rng = np.random.default_rng(seed)
    features = entry_features(entry, image_size)

    def examples():
        for i in range(num_episodes):
            instruction = f"task {i % 3} of {entry.name}"
            step: dict = {}
            flat = {key: _frames(steps, image_size, rng) for key in entry.images.values()}
            flat.update({k: _values(k, spec, entry, steps, rng, instruction) for k, spec in entry.features.items()})
            for path, value in flat.items():
                *parents, leaf = path.split("/")
                node = step
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = value
            yield {"steps": step, "episode_metadata": {"file_path": f"synthetic/{entry.name}/{i}",
                                                        "episode_id": i}}, steps

    return write_examples(root, entry.name, features, examples(), version=version,
                          description=f"synthetic data in the raw schema of registry entry {entry.name}")
