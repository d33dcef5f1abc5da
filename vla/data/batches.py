"""Frames -> training batches: mixture sampling, shuffle buffers, chunks, history, augmentation.

Episodes stream from tf.data (C++ threads) with images still JPEG/PNG-encoded; only sampled frames
are decoded. Decoding, crop/resize and colour jitter run in uint8 OpenCV (which releases the GIL)
on a small thread pool, and whole batches are prepared one step ahead in a background thread, so
the consumer (a training step) rarely waits.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from vla.data.errors import DataError
from vla.data.registry import REGISTRY_PATH, MIXTURES_PATH, load_mixtures, load_registry, resolve_mixture
from vla.data.rlds import DatasetSource, decode_image, iter_episodes, open_dataset
from vla.data.standardize import StdEpisode
from vla.data.statistics import source_statistics
from vla.model.normalization import normalize_actions

logger = logging.getLogger(__name__)

MODEL_IMAGE_SIZE = 224  # the fused DINOv2/SigLIP backbone's input side
MODEL_KEYS = ("pixel_values", "input_ids", "attention_mask", "labels")  # what `model(...)` takes


def model_inputs(batch: dict) -> dict:
    """The part of a batch that `model(**model_inputs(batch))` takes."""
    return {k: batch[k] for k in MODEL_KEYS}


class Processor(Protocol):
    """The model processor's training half (vla.model.processor.OpenVLAProcessor)."""

    def process_images(self, images: list[np.ndarray]) -> Any: ...

    def encode_training(self, instructions: list[str], normalized_actions: np.ndarray) -> dict: ...


@dataclasses.dataclass(frozen=True)
class Augment:
    """OpenVLA's training augmentation (prismatic/vla/datasets/rlds image_augment_kwargs)."""

    crop_area: float = 0.9  # random resized crop keeping this fraction of the area, aspect ratio kept
    brightness: float = 0.2  # add U(-b, b) on [0, 1] pixels
    contrast: tuple[float, float] = (0.8, 1.2)  # scale around the per-channel mean
    saturation: tuple[float, float] = (0.8, 1.2)  # scale HSV saturation
    hue: float = 0.05  # rotate hue by U(-h, h) of a full turn


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How frames are drawn from episodes."""

    action_chunk: int = 1  # actions t..t+N-1 per sample, zero-padded and masked past the episode end
    history: int = 1  # images t-H+1..t per sample, the first frame repeated (and masked) before the start
    shuffle_buffer: int = 2000  # frames buffered per dataset before sampling
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """What `make_batch_iterator` reads and how."""

    mixture: str  # a mixture in mixtures.toml, or any one dataset name
    data_dir: pathlib.Path
    batch_size: int = 16
    train: bool = True  # shuffle, repeat forever and augment; False: one ordered pass, no augmentation
    image_size: int = MODEL_IMAGE_SIZE
    roles: tuple[str, ...] = ("primary",)  # cameras fed to the model, by role
    sampling: Sampling = Sampling()
    augment: Augment | None = Augment()  # None: no augmentation even when training


_VALUES = np.arange(256, dtype=np.float32) / 255


def augment_image(img: np.ndarray, size: int, aug: Augment | None, rng: np.random.Generator) -> np.ndarray:
    """uint8 HxWx3 -> uint8 size x size x 3: random resized crop + colour jitter (or a plain resize)."""
    import cv2

    if aug is None:
        if img.shape[:2] == (size, size):
            return img
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    side = math.sqrt(aug.crop_area)
    ch, cw = h * side, w * side
    y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
    # crop and resize in one interpolation
    warp = np.array([[size / cw, 0, -x0 * size / cw], [0, size / ch, -y0 * size / ch]], np.float32)
    x = cv2.warpAffine(img, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # brightness then contrast, each clipped to [0, 1] as tf.image does: exact as a per-channel lookup table
    bright = np.clip(_VALUES + rng.uniform(-aug.brightness, aug.brightness), 0, 1)
    c = rng.uniform(*aug.contrast)
    lut = np.empty((256, 1, 3), np.uint8)
    for k in range(3):
        hist = cv2.calcHist([x], [k], None, [256], [0, 256])[:, 0]
        mean = float(hist @ bright) / float(hist.sum())
        lut[:, 0, k] = np.rint(np.clip((bright - mean) * c + mean, 0, 1) * 255)
    x = cv2.LUT(x, lut)
    # saturation and hue in HSV with the hue on 0..255
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV_FULL)
    ramp = np.arange(256)
    lut[:, 0, 0] = np.mod(np.rint(ramp + 256 * rng.uniform(-aug.hue, aug.hue)), 256)
    lut[:, 0, 1] = np.clip(np.rint(ramp * rng.uniform(*aug.saturation)), 0, 255)
    lut[:, 0, 2] = ramp
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB_FULL)


@dataclasses.dataclass(frozen=True)
class _FrameRef:
    dataset: int
    episode: StdEpisode
    t: int


class _DatasetStream:
    """Frames of one dataset through a shuffle buffer (train) or in order (eval)."""

    def __init__(self, index: int, source: DatasetSource, cfg: BatchConfig, rank: int, world_size: int,
                 rng: np.random.Generator):
        self.index, self.rng, self.train = index, rng, cfg.train
        self.size = cfg.sampling.shuffle_buffer
        self.episodes = iter_episodes(source, shuffle_files=cfg.train, seed=cfg.sampling.seed, rank=rank,
                                      world_size=world_size, repeat=cfg.train)
        self.buffer: list[_FrameRef] = []
        self.pending: list[_FrameRef] = []

    def _more(self) -> bool:
        ep = next(self.episodes, None)
        if ep is None:
            return False
        self.pending.extend(_FrameRef(self.index, ep, t) for t in range(len(ep)))
        return True

    def next(self) -> _FrameRef | None:
        """The next frame, or None at the end of an eval pass."""
        if not self.train:
            if not self.pending and not self._more():
                return None
            return self.pending.pop(0)
        while len(self.buffer) < self.size:
            if not self.pending and not self._more():
                break
            self.buffer.append(self.pending.pop())
        if not self.buffer:
            return None
        i = int(self.rng.integers(len(self.buffer)))
        self.buffer[i], self.buffer[-1] = self.buffer[-1], self.buffer[i]
        return self.buffer.pop()


def _sample_arrays(ref: _FrameRef, cfg: BatchConfig, stats: dict, name: str, seed: np.random.SeedSequence):
    """Decode, augment and gather one sample (runs on a worker thread; its rng comes with it)."""
    ep, t, s = ref.episode, ref.t, cfg.sampling
    aug = cfg.augment if cfg.train else None
    steps = [max(t - k, 0) for k in range(s.history - 1, -1, -1)]
    images = {}
    for role in cfg.roles:
        frames = ep.images[role]
        # a fresh generator from the same seed per image: one crop and one colour jitter for the whole
        # history window, so frames of a window differ only by what happened in the scene
        images[role] = np.stack([augment_image(decode_image(frames[i]), cfg.image_size, aug,
                                               np.random.default_rng(seed)) for i in steps])
    idx = np.arange(t, t + s.action_chunk)
    valid = idx < len(ep)
    chunk = np.zeros((s.action_chunk, ep.action.shape[1]), np.float32)
    chunk[valid] = normalize_actions(ep.action[idx[valid]], stats["action"])  # q01/q99 -> [-1, 1], clipped
    return {
        "images": images,
        "history_mask": np.array([t - k >= 0 for k in range(s.history - 1, -1, -1)]),
        "actions": chunk,
        "action_mask": valid,
        "proprio": ep.state[t],
        "instruction": str(ep.instructions[t]),
        "dataset": name,
    }


def _process_images(processor: Processor, images: list[np.ndarray], pool: ThreadPoolExecutor, parts: int):
    """processor.process_images over `parts` slices on the pool (numpy/PIL release the GIL), concatenated."""
    import torch

    step = math.ceil(len(images) / parts)
    slices = [images[i:i + step] for i in range(0, len(images), step)]
    return torch.cat(list(pool.map(processor.process_images, slices)))


def _collate(samples: list[dict], cfg: BatchConfig, processor: Processor | None, pool: ThreadPoolExecutor,
             workers: int) -> dict:
    out: dict[str, Any] = {
        "actions": np.stack([x["actions"] for x in samples]),
        "action_mask": np.stack([x["action_mask"] for x in samples]),
        "history_mask": np.stack([x["history_mask"] for x in samples]),
        "instructions": [x["instruction"] for x in samples],
        "dataset_names": [x["dataset"] for x in samples],
    }
    widths = {x["proprio"].shape for x in samples}
    # datasets of a mixture may differ in proprio width: then it stays a list, one array per sample
    out["proprio"] = np.stack([x["proprio"] for x in samples]) if len(widths) == 1 else [x["proprio"] for x in samples]
    if processor is None:
        for role in cfg.roles:
            out[f"images_{role}"] = np.stack([x["images"][role] for x in samples])  # uint8 [B, H, S, S, 3]
        return out
    import torch

    for role in cfg.roles:
        key = "pixel_values" if role == cfg.roles[0] else f"pixel_values_{role}"
        out[key] = _process_images(processor, [x["images"][role][-1] for x in samples], pool, workers)
    flat = out["actions"].reshape(len(samples), -1)  # a chunk of N actions = N * A action tokens
    out.update(processor.encode_training(out["instructions"], flat))
    out["actions"] = torch.from_numpy(out["actions"])
    out["action_mask"] = torch.from_numpy(out["action_mask"])
    return out


def _batches(cfg: BatchConfig, processor: Processor | None, rank: int, world_size: int,
             registry_path: pathlib.Path, mixtures_path: pathlib.Path, workers: int) -> Iterator[dict]:
    registry = load_registry(registry_path)
    mixture = resolve_mixture(cfg.mixture, load_mixtures(mixtures_path))
    names = list(mixture.weights)
    sources = [open_dataset(n, cfg.data_dir, registry) for n in names]
    stats = [source_statistics(s) for s in sources]
    dims = {n: len(st["action"]["q01"]) for n, st in zip(names, stats)}
    if len(set(dims.values())) > 1:
        raise DataError(f"mixture {mixture.name!r} mixes action dims {dims}; one batch needs one action space")
    for s in sources:
        missing = [r for r in cfg.roles if r not in s.entry.images]
        if missing:
            raise DataError(f"dataset {s.name!r} has no {missing} camera (it has {sorted(s.entry.images)}); "
                            "drop the role from roles or leave the dataset out of the mixture")
    # sample by weight x number of transitions, as OpenVLA does
    sizes = np.array([mixture.weights[n] * st["num_transitions"] for n, st in zip(names, stats)], np.float64)
    probs = sizes / sizes.sum()
    logger.info("mixture %s: %s", mixture.name, {n: round(float(p), 4) for n, p in zip(names, probs)})
    root = np.random.SeedSequence([cfg.sampling.seed, rank])
    pick_seed, aug_seed, *stream_seeds = root.spawn(2 + len(names))
    pick = np.random.default_rng(pick_seed)
    streams = [_DatasetStream(i, src, cfg, rank, world_size, np.random.default_rng(ss))
               for i, (src, ss) in enumerate(zip(sources, stream_seeds))]
    live = list(range(len(streams)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vla-data") as pool:
        while live:
            refs: list[_FrameRef] = []
            while len(refs) < cfg.batch_size and live:
                i = (int(pick.choice(len(streams), p=probs)) if cfg.train else live[0])
                ref = streams[i].next()
                if ref is None and cfg.train:
                    raise DataError(f"dataset {names[i]!r} yielded no frames for rank {rank}; check its split")
                if ref is None:
                    live.remove(i)
                    continue
                refs.append(ref)
            if not refs:
                return
            seeds = aug_seed.spawn(len(refs))
            samples = list(pool.map(lambda a: _sample_arrays(a[0], cfg, stats[a[0].dataset],
                                                             names[a[0].dataset], a[1]), zip(refs, seeds)))
            yield _collate(samples, cfg, processor, pool, workers)


def mixture_norm_stats(mixture: str, data_dir: str | pathlib.Path, *,
                       registry_path: str | pathlib.Path = REGISTRY_PATH,
                       mixtures_path: str | pathlib.Path = MIXTURES_PATH) -> dict[str, dict]:
    """`{dataset: statistics}` of every dataset in `mixture`: the model's norm_stats for a checkpoint."""
    registry = load_registry(registry_path)
    names = resolve_mixture(mixture, load_mixtures(mixtures_path)).weights
    return {n: source_statistics(open_dataset(n, data_dir, registry)) for n in names}


def make_batch_iterator(cfg: BatchConfig, processor: Processor | None = None, *, rank: int = 0, world_size: int = 1,
                        registry_path: str | pathlib.Path = REGISTRY_PATH,
                        mixtures_path: str | pathlib.Path = MIXTURES_PATH, workers: int = 2,
                        prefetch: int = 2) -> Iterator[dict]:
    """Batches ready for `model(**batch)` (given the model's processor) or numpy batches (without one)."""
    if cfg.batch_size < 1 or cfg.sampling.action_chunk < 1 or cfg.sampling.history < 1:
        raise DataError(f"batch_size, action_chunk and history must be >= 1; got {cfg.batch_size}, "
                        f"{cfg.sampling.action_chunk}, {cfg.sampling.history}")
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
    gen = _batches(cfg, processor, rank, world_size, pathlib.Path(registry_path), pathlib.Path(mixtures_path), workers)
    return _prefetched(gen, prefetch) if prefetch > 0 else gen


_DONE = object()


def _prefetched(gen: Iterator[dict], depth: int) -> Iterator[dict]:
    """Run `gen` on a background thread, `depth` batches ahead; errors re-raise in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(e)

    thread = threading.Thread(target=work, name="vla-data-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        gen_close = getattr(gen, "close", None)
        if gen_close is not None and not thread.is_alive():
            gen_close()
