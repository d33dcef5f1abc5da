"""Training frames: held-out split, normalization, and the resumable, rank-sharded sample order."""
from __future__ import annotations

import numpy as np
import pytest

from vla.train.data import SampleOrder, load_train_data
from vla.train.errors import IncompatibleDataError


def test_every_frame_once_per_epoch_and_deterministic():
    order = SampleOrder(np.ones(10), seed=3, batch_size=4)
    first_epochs = np.concatenate([order.global_batch(s) for s in range(5)])  # 20 samples = 2 epochs
    assert sorted(first_epochs[:10]) == list(range(10)) and sorted(first_epochs[10:]) == list(range(10))
    again = SampleOrder(np.ones(10), seed=3, batch_size=4)
    assert np.array_equal(again.global_batch(4), order.global_batch(4))  # a pure function of the step
    assert not np.array_equal(SampleOrder(np.ones(10), seed=4, batch_size=4).global_batch(0), order.global_batch(0))


def test_ranks_and_micro_batches_partition_the_global_batch():
    order = SampleOrder(np.ones(50), seed=0, batch_size=8)
    parts = [mb for rank in range(2) for mb in order.micro_batches(3, rank, 2, grad_accum=2)]
    assert [len(p) for p in parts] == [2, 2, 2, 2]
    assert np.array_equal(np.concatenate(parts), order.global_batch(3))


def test_weighted_mixture_draws_follow_the_weights():
    weights = np.array([1.0] * 10 + [3.0] * 10)  # second dataset weighted 3x
    order = SampleOrder(weights, seed=0, batch_size=1000)
    share = np.mean(order.global_batch(0) >= 10)
    assert share == pytest.approx(0.75, abs=0.05)


def test_heldout_episodes_are_split_off_and_actions_normalized(colour_data):
    data = load_train_data("colours", colour_data, split="train", role="primary", heldout_fraction=0.25, seed=7)
    assert data.episodes == {"colours": (6, 2)}
    assert len(data.train) == 36 and len(data.heldout) == 12
    assert data.action_dim == 7
    masked = np.asarray(data.norm_stats["colours"]["action"]["mask"])
    assert np.abs(data.train.actions[:, masked]).max() <= 1.0
    assert data.train.actions[:, masked].min() == -1.0  # q01 of every normalized dim maps to -1
    assert set(data.train.instructions) == {"move to the coloured cube"}
    none_held = load_train_data("colours", colour_data, split="train", role="primary", heldout_fraction=0.0, seed=7)
    assert none_held.heldout is None and len(none_held.train) == 48


def test_missing_camera_and_too_few_episodes_raise(colour_data):
    with pytest.raises(IncompatibleDataError, match="no 'wrist' camera .* --image-role"):
        load_train_data("colours", colour_data, split="train", role="wrist", heldout_fraction=0.1, seed=0)
    with pytest.raises(IncompatibleDataError, match="--heldout-fraction 0"):
        load_train_data("colours6", colour_data, split="train", role="primary", heldout_fraction=0.9, seed=0)


def test_unusable_statistics_are_named_with_the_fix(tmp_path):
    from train_fixtures import colour_episodes  # the session fixture's data must stay intact: write a copy

    from vla.data.rlds import open_dataset
    from vla.data.statistics import cache_path
    from vla.data.rlds_writer import write_rlds
    from vla.train.errors import MissingStatisticsError

    write_rlds(tmp_path, "few", colour_episodes(2, 2))
    source = open_dataset("few", tmp_path)
    cache = cache_path(source, "train")
    cache.write_text('{"action": {"mean": [0, 0, 0, 0, 0, 0, 0]}}')  # a damaged cache
    with pytest.raises(MissingStatisticsError, match=f"'few' .*q01.*delete the damaged cache {cache}"):
        load_train_data("few", tmp_path, split="train", role="primary", heldout_fraction=0.0, seed=0)
    cache.unlink()  # the advice works
    assert load_train_data("few", tmp_path, split="train", role="primary", heldout_fraction=0.0, seed=0).action_dim == 7


def test_mixture_keeps_each_datasets_statistics_and_refuses_mixed_action_sizes(colour_data, tmp_path):
    mixtures = tmp_path / "mixtures.toml"
    mixtures.write_text("[both]\ncolours = 1.0\ncolours6 = 2.0\n[same]\ncolours = 3.0\n")
    with pytest.raises(IncompatibleDataError, match="mixes action sizes .*'colours': 7.*'colours6': 6"):
        load_train_data("both", colour_data, split="train", role="primary", heldout_fraction=0.0, seed=0,
                        mixtures_file=mixtures)
    data = load_train_data("same", colour_data, split="train", role="primary", heldout_fraction=0.0, seed=0,
                           mixtures_file=mixtures)
    assert set(data.norm_stats) == {"colours"} and np.all(data.train.weights == 3.0)
