"""Training frames: episodes of one dataset or a mixture, a held-out episode split, and a
deterministic, resumable sample order.

The order is a pure function of (seed, step): step `s` takes global samples s*B .. s*B+B-1 of an
endless stream of per-epoch permutations (or, for a weighted mixture, seeded weighted draws), and
rank r of n takes its contiguous slice of them. So the "data position" of a run is its step number,
a resumed run reads exactly what an uninterrupted one would, and n processes together read what one
process reads with the same global batch.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import numpy as np
import torch

from vla.data.registry import MIXTURES_PATH, load_mixtures, resolve_mixture
from vla.data.batches import Augment, augment_image
from vla.data.rlds import decode_image, iter_episodes, open_dataset
from vla.data.errors import StatisticsError
from vla.data.statistics import cache_path, source_statistics
from vla.errors import StatisticsError as ModelStatisticsError
from vla.model.normalization import ActionStats, normalize_actions, symmetric_bounds
from vla.train.errors import IncompatibleDataError, MissingStatisticsError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Frames:
    """Flat arrays over every frame of a set of episodes (images stay JPEG/PNG bytes until used)."""

    images: np.ndarray  # object [N, R] of encoded bytes, one column per camera role (in the model's order)
    instructions: np.ndarray  # object [N] of str
    actions: np.ndarray  # float32 [N, A], normalized with their dataset's statistics
    weights: np.ndarray  # float64 [N], sampling weight of each frame (its dataset's mixture weight)
    # --rth: object [N, 2] of str, the step's motion and the motion query's target (vla.rth.finetune)
    motions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def take(self, idx: np.ndarray) -> "Frames":
        """The frames at `idx`, in that order."""
        return Frames(*(None if v is None else v[idx] for v in _columns(self)))


def _columns(frames: Frames) -> list[np.ndarray | None]:
    return [getattr(frames, f.name) for f in dataclasses.fields(Frames)]


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Training and held-out frames plus the statistics to store under each dataset's key."""

    train: Frames
    heldout: Frames | None
    norm_stats: dict[str, Any]  # dataset key -> statistics in the model's norm_stats format
    action_dim: int
    episodes: dict[str, tuple[int, int]]  # dataset -> (training episodes, held-out episodes)


def _frames(episodes: list, roles: tuple[str, ...], stats: dict, weight: float, name: str,
            motions: list[np.ndarray] | None) -> Frames:
    missing = sorted({r for ep in episodes for r in roles if r not in ep.images})
    if missing:
        have = sorted(episodes[0].images)
        raise IncompatibleDataError(f"dataset {name!r} has no {', '.join(map(repr, missing))} camera (its image "
                                    f"keys: {have}); pass "
                                    f"--image-role / --images with roles it has")
    images = np.stack([np.concatenate([ep.images[r] for ep in episodes]) for r in roles], axis=1)
    instructions = np.concatenate([ep.instructions for ep in episodes])
    try:  # q01..q99 -> [-1, 1], the 2% tails saturating, as OpenVLA trains
        actions = normalize_actions(np.concatenate([ep.action for ep in episodes]), stats["action"]).astype(np.float32)
    except ModelStatisticsError as e:
        raise MissingStatisticsError(f"statistics of dataset {name!r} do not fit its actions: {e}") from e
    return Frames(images, instructions, actions, np.full(len(actions), weight),
                  None if motions is None else np.concatenate(motions))


def _concat(parts: list[Frames]) -> Frames:
    columns = zip(*(_columns(p) for p in parts))
    return Frames(*(None if column[0] is None else np.concatenate(column) for column in columns))


def _pick(items: list | None, idx: np.ndarray) -> list | None:
    return None if items is None else [items[i] for i in idx]


def load_train_data(dataset_or_mixture: str, data_dir: pathlib.Path, *, split: str, role: str | tuple[str, ...],
                    heldout_fraction: float, seed: int, mixtures_file: pathlib.Path = MIXTURES_PATH,
                    motion_lookahead: int | None = None, symmetric_action_bounds: bool = False) -> TrainData:
    """Read every episode of the dataset (or each mixture member), split off held-out episodes.

    motion_lookahead: RT-H (--rth); each frame also carries its `language_motion` and the motion this
    many steps on (the datasets must be labelled by `vla rth label`).
    symmetric_action_bounds: normalize (and store) each dataset's statistics via `symmetric_bounds`."""
    roles = (role,) if isinstance(role, str) else tuple(role)  # several: the model's --images, in order
    mixture = resolve_mixture(dataset_or_mixture, load_mixtures(mixtures_file))
    train_parts, heldout_parts, norm_stats, counts, dims = [], [], {}, {}, {}
    for name, weight in mixture.weights.items():
        source = open_dataset(name, data_dir)
        try:
            stats = source_statistics(source, split)
            ActionStats.from_dict(stats["action"], where=f"statistics of {name!r}")
        except (StatisticsError, ModelStatisticsError, KeyError) as e:
            cached = cache_path(source, split)
            fix = (f"delete the damaged cache {cached} so they are recomputed" if cached.is_file() else
                   f"run `vla data stats {name} --data-dir {data_dir}`")
            raise MissingStatisticsError(f"dataset {name!r} in {data_dir} has no usable statistics ({e}); {fix}") from e
        if symmetric_action_bounds:
            stats = symmetric_bounds(stats)
        episodes = list(iter_episodes(source, split))
        motions = None
        if motion_lookahead is not None:
            from vla.rth.finetune import read_motion_pairs

            motions = read_motion_pairs(source, data_dir, split, [len(ep) for ep in episodes], motion_lookahead)
        n_held = int(np.ceil(heldout_fraction * len(episodes))) if heldout_fraction > 0 else 0
        if len(episodes) - n_held < 1:
            raise IncompatibleDataError(
                f"dataset {name!r} has {len(episodes)} episode(s); holding out {n_held} leaves none to train on. "
                "Record more episodes or pass --heldout-fraction 0")
        order = np.random.default_rng(seed).permutation(len(episodes))
        held_idx, kept_idx = order[len(order) - n_held:], order[:len(order) - n_held]
        train_parts.append(_frames(_pick(episodes, kept_idx), roles, stats, weight, name, _pick(motions, kept_idx)))
        if n_held:
            heldout_parts.append(_frames(_pick(episodes, held_idx), roles, stats, weight, name,
                                         _pick(motions, held_idx)))
        norm_stats[name], counts[name], dims[name] = stats, (len(kept_idx), n_held), train_parts[-1].actions.shape[1]
        log.info("dataset %s: %d training episodes (%d frames), %d held out", name, len(kept_idx),
                 len(train_parts[-1]), n_held)
    if len(set(dims.values())) != 1:
        raise IncompatibleDataError(f"mixture {dataset_or_mixture!r} mixes action sizes {dims}; one model "
                                    "decodes one action size, so train on datasets of one action space")
    return TrainData(_concat(train_parts), _concat(heldout_parts) if heldout_parts else None,
                     norm_stats, next(iter(dims.values())), counts)


class SampleOrder:
    """Which training frames each step and rank read: a pure function of (seed, step, rank)."""

    def __init__(self, weights: np.ndarray, seed: int, batch_size: int) -> None:
        self.n, self.seed, self.batch_size = len(weights), seed, batch_size
        # equal weights: epochs without replacement (OpenVLA's shuffled stream); else weighted draws
        self.probs = None if np.all(weights == weights[0]) else weights / weights.sum()
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def global_batch(self, step: int) -> np.ndarray:
        """Frame indices of the whole batch of optimizer step `step` (0-based)."""
        if self.probs is not None:
            return np.random.default_rng([self.seed, 1 << 20, step]).choice(self.n, self.batch_size, p=self.probs)
        pos = step * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(pos, self.n)
        return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offsets)])

    def micro_batches(self, step: int, rank: int, world_size: int, grad_accum: int) -> list[np.ndarray]:
        """This rank's micro-batches of step `step`: its contiguous slice, split into grad_accum parts."""
        return _split(self.global_batch(step), rank, world_size, grad_accum)

    def micro_positions(self, rank: int, world_size: int, grad_accum: int) -> list[np.ndarray]:
        """Positions in the global batch of this rank's micro-batches (the same split as `micro_batches`)."""
        return _split(np.arange(self.batch_size), rank, world_size, grad_accum)


def _split(batch: np.ndarray, rank: int, world_size: int, grad_accum: int) -> list[np.ndarray]:
    return np.array_split(np.array_split(batch, world_size)[rank], grad_accum)


def collate(processor: Any, frames: Frames, augment: AugmentSeed | None = None,
            motion_rows: np.ndarray | None = None, swaps: list | None = None) -> dict[str, torch.Tensor]:
    """Decode images and build the model's training inputs (pixel_values, ids, mask, labels).

    augment: when given, each image gets OpenVLA's training augmentation, drawn from a generator seeded
    by (seed, step, frame index, role) so that a resumed run and any number of ranks see the same pixels.
    motion_rows: frames with motions (--rth) become RT-H rows, motion queries where True (None: all
    action queries given the step's motion). swaps: per frame, a (motion, action) that replaces an action
    query's own (--rth-swap), or None.
    """
    if frames.motions is None:
        batch = processor.encode_training(list(frames.instructions), frames.actions)
    else:
        from vla.rth.finetune import rth_batch

        batch = rth_batch(processor, frames.instructions, frames.motions, frames.actions, motion_rows, swaps)
    columns = []
    for r, column in enumerate(frames.images.T):
        images = [decode_image(bytes(b)) for b in column]
        if augment is not None:
            images = [augment.apply(img, j, r) for j, img in enumerate(images)]
        columns.append(processor.process_images(images))
    # several roles: their 6-channel blocks stacked along channels in role order (vla.model.multi_image)
    batch["pixel_values"] = torch.cat(columns, dim=1)
    return batch


@dataclasses.dataclass(frozen=True)
class AugmentSeed:
    """OpenVLA's image augmentation for one optimizer step, reproducible from (seed, step)."""

    seed: int
    step: int
    frames: tuple[int, ...]  # training-frame indices of the micro-batch, in batch order
    size: int  # output side before the model's own resize (the model's image size)
    aug: Augment = Augment()

    def apply(self, image: np.ndarray, position: int, role: int) -> np.ndarray:
        """Augment the image at `position` of the micro-batch, camera `role` (its column)."""
        rng = np.random.default_rng([self.seed, 1 << 22, self.step, self.frames[position], role])
        return augment_image(image, self.size, self.aug, rng)
