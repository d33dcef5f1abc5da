"""`vla finetune --rth`: RT-H's two queries through the normal fine-tuning loop (vla/train).

The loop stays one engine. With --rth it asks this module for three things: the per-step motions of
each training episode (from a `vla rth label` dataset), the RT-H rows of a micro-batch (motion
queries where `motion_query_rows` says, action queries given the step's motion elsewhere), and a
loss module that trains every answer token of both queries. Held-out evaluation runs the action
query with the ground-truth motion, so its accuracy and L1 compare with a flat run's.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vla.model.vib import add_kl_term
from vla.rth.errors import MissingMotionsError
from vla.rth.label import MOTION_FIELD
from vla.rth.query import RTHInfo, Sample, encode_samples, labelled_logits, row_weighted_loss, set_rth_info
from vla.rth.train import MotionPrototypes, motion_ahead, require_motion_field
from vla.train.step import ActionLoss, ActionMetrics

NOW, AHEAD = 0, 1  # columns of the motion pairs: the step's motion, the motion query's target


def read_motion_pairs(source: Any, data_dir: Any, split: str, lengths: Sequence[int],
                      lookahead: int) -> list[np.ndarray]:
    """Per episode (in `iter_episodes` order), object [T, 2]: (the step's motion, the motion `lookahead` on)."""
    import tensorflow_datasets as tfds

    require_motion_field(source.name, data_dir, source.builder.info.features["steps"].feature)
    ds = source.builder.as_dataset(split=split, shuffle_files=False, decoders={"steps": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ep: ep["steps"][MOTION_FIELD])  # the same file order as iter_episodes reads
    out = []
    for i, raw in enumerate(tfds.as_numpy(ds)):
        motions = [m.decode() if isinstance(m, bytes) else str(m) for m in raw]
        if i >= len(lengths) or len(motions) != lengths[i]:
            raise MissingMotionsError(f"dataset {source.name!r}: episode {i} has {len(motions)} motions but "
                                      f"{lengths[i] if i < len(lengths) else 'no'} steps; relabel it with "
                                      f"`vla rth label`")
        out.append(np.array([(m, motion_ahead(motions, t, lookahead)) for t, m in enumerate(motions)],
                            dtype=object).reshape(len(motions), 2))
    if len(out) != len(lengths):
        raise MissingMotionsError(f"dataset {source.name!r}: {len(out)} episodes carry motions of "
                                  f"{len(lengths)}; relabel it with `vla rth label`")
    return out


def motion_query_rows(batch_size: int, mix: float) -> np.ndarray:
    """bool [batch_size]: round(mix * batch_size) motion-query rows, spread evenly over the batch.

    A function of the batch position alone, so every micro-batch and rank gets its share and a
    resumed run reads the same rows."""
    p = np.arange(batch_size)
    return np.floor((p + 1) * mix + 0.5) > np.floor(p * mix + 0.5)


class MotionSwap:
    """--rth-swap: which positions of every global batch are action queries on a swapped motion, and what
    they get (`vla.rth.train.MotionPrototypes`; the draw is a function of seed, step and position, so a
    resumed run and any number of ranks read the same rows)."""

    def __init__(self, motions: np.ndarray, actions: np.ndarray, batch_size: int, mix: float, swap: float,
                 seed: int, compose: float = 0.0) -> None:
        self.prototypes = MotionPrototypes.from_frames(motions[:, NOW], actions, compose)
        action_positions = np.flatnonzero(~motion_query_rows(batch_size, mix))
        self.rows = np.zeros(batch_size, bool)
        self.rows[action_positions[motion_query_rows(len(action_positions), swap)]] = True
        self.seed = seed

    def draws(self, step: int, positions: np.ndarray, motions: np.ndarray,
              actions: np.ndarray) -> list[tuple[str, np.ndarray] | None]:
        """Per row of a micro-batch (global batch `positions`): (motion, action) to train on instead, or None."""
        return [self.prototypes.draw(str(pair[NOW]), action, np.random.default_rng([self.seed, step, int(p)]))
                if self.rows[p] else None for p, pair, action in zip(positions, motions, actions)]


def rth_batch(processor: Any, instructions: Sequence[str], motions: np.ndarray, actions: np.ndarray,
              motion_rows: np.ndarray | None,
              swaps: Sequence[tuple[str, np.ndarray] | None] | None = None) -> dict[str, torch.Tensor]:
    """Ids, mask, labels and weights of RT-H rows (`motion_rows` None: every row an action query; a row's
    entry in `swaps`, where given, replaces its motion and action)."""
    rows = np.zeros(len(instructions), bool) if motion_rows is None else motion_rows
    swaps = [None] * len(instructions) if swaps is None else swaps
    samples = [Sample(str(task), pair[AHEAD]) if query else
               Sample(str(task), pair[NOW], action) if swap is None else Sample(str(task), *swap)
               for task, pair, action, query, swap in zip(instructions, motions, actions, rows, swaps)]
    return encode_samples(processor, samples)


class RTHLoss(ActionLoss):
    """Both queries' answer tokens, each row averaged then weighted; metrics on the action tokens."""

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits [n, vocab] and target ids [n] of the action tokens)."""
        vla = self.vla
        patches, kl = vla.embed_images_with_kl(pixel_values)  # kl: 0 without a bottleneck
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        logits, targets, rows = labelled_logits(vla, patches, batch)
        loss = row_weighted_loss(logits, targets, rows, weights)
        if vla.config.vib_roles:
            self.last_kl = float(kl.detach())
        loss = add_kl_term(loss, kl, vla.config)
        action = (targets >= self.first_id) & (targets <= self.last_id)
        return loss, logits[action], targets[action]

    @torch.no_grad()
    def metrics(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> ActionMetrics:
        """Action-token metrics (none in an all-motion batch); the loss reported is the action tokens'."""
        if targets.numel() == 0:
            return ActionMetrics(0.0, 0, 0.0, 0)
        return super().metrics(F.cross_entropy(logits, targets), logits, targets)


def mark_rth(model: Any, motions: np.ndarray, instructions: np.ndarray, lookahead: int, mix: float) -> None:
    """Record the run's motion vocabulary and tasks in the model's config (the `rth` table)."""
    set_rth_info(model, RTHInfo.new([str(m) for m in motions[:, NOW]], [str(t) for t in instructions],
                                    lookahead, mix))
