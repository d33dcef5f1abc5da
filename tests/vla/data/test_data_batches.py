"""Frames -> batches: mixtures, chunks, history, augmentation, determinism, ranks."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from vla.data.batches import (Augment, BatchConfig, Sampling, augment_image, make_batch_iterator,
                              mixture_norm_stats)
from vla.data.errors import DataError
from vla.data.registry import load_registry
from vla.data.rlds_writer import Episode, write_rlds
from vla.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    write_synthetic(root, load_registry().get("toto"), num_episodes=4, steps=6, image_size=(40, 48))
    write_synthetic(root, load_registry().get("viola"), num_episodes=3, steps=5, image_size=(32, 32), seed=1)
    eps = [Episode({"primary": np.full((5, 16, 16, 3), 10 * i, np.uint8)},
                   np.zeros((5, 3), np.float32),
                   np.stack([np.arange(5, dtype=np.float32) + 10 * i] * 7, 1), f"demo {i}") for i in range(3)]
    write_rlds(root, "mine", eps)
    return root


def test_train_batches_shapes_and_mixture(data_dir, tmp_path):
    mixtures = tmp_path / "mix.toml"
    mixtures.write_text("[both]\ntoto = 1.0\nviola = 3.0\n")
    cfg = BatchConfig("both", data_dir, batch_size=8, image_size=32, sampling=Sampling(action_chunk=3, history=2))
    batches = list(itertools.islice(make_batch_iterator(cfg, mixtures_path=mixtures), 6))
    b = batches[0]
    assert b["images_primary"].shape == (8, 2, 32, 32, 3) and b["images_primary"].dtype == np.uint8
    assert b["actions"].shape == (8, 3, 7) and b["action_mask"].shape == (8, 3)
    assert np.all(np.abs(b["actions"]) <= 1.0)
    assert isinstance(b["proprio"], list) or b["proprio"].shape[0] == 8  # toto 7 vs viola 9 proprio dims
    # one crop/jitter per history window: where both frames are the same step, the images match
    first_steps = 0
    for batch in batches:
        same = ~batch["history_mask"][:, 0]
        first_steps += int(same.sum())
        np.testing.assert_array_equal(batch["images_primary"][same, 0], batch["images_primary"][same, 1])
    assert first_steps > 0
    norm_stats = mixture_norm_stats("both", data_dir, mixtures_path=mixtures)
    assert set(norm_stats) == {"toto", "viola"} and norm_stats["viola"]["num_transitions"] == 15
    names = [n for b in batches for n in b["dataset_names"]]
    # weight x size: toto 24 transitions x 1, viola 15 x 3 -> viola about 65 %
    assert 0.4 < names.count("viola") / len(names) < 0.9


def test_eval_pass_is_ordered_complete_and_chunks_are_masked(data_dir):
    cfg = BatchConfig("mine", data_dir, batch_size=4, train=False, image_size=16,
                      sampling=Sampling(action_chunk=3, history=2))
    batches = list(make_batch_iterator(cfg))
    assert sum(len(b["instructions"]) for b in batches) == 15  # every frame once; last batch partial
    masks = np.concatenate([b["action_mask"] for b in batches])
    hist = np.concatenate([b["history_mask"] for b in batches])
    steps = np.tile(np.arange(5), 3)
    np.testing.assert_array_equal(masks, np.arange(3)[None, :] + steps[:, None] < 5)
    np.testing.assert_array_equal(hist[:, 0], steps >= 1)
    acts = np.concatenate([b["actions"] for b in batches])
    assert np.all(acts[~masks] == 0)  # padded past the episode end
    # eval images are the stored frames, resized, unaugmented
    first = batches[0]["images_primary"][0, -1]
    assert np.all(first == 0)


def test_same_seed_same_batches_and_ranks_differ(data_dir):
    cfg = BatchConfig("toto", data_dir, batch_size=4, image_size=24, sampling=Sampling(seed=7))
    a = list(itertools.islice(make_batch_iterator(cfg), 3))
    b = list(itertools.islice(make_batch_iterator(cfg), 3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["images_primary"], y["images_primary"])
        np.testing.assert_array_equal(x["actions"], y["actions"])
    r0 = next(make_batch_iterator(BatchConfig("toto", data_dir, batch_size=12, train=False), rank=0, world_size=2))
    r1 = next(make_batch_iterator(BatchConfig("toto", data_dir, batch_size=12, train=False), rank=1, world_size=2))
    assert len(r0["instructions"]) == len(r1["instructions"]) == 12
    assert set(r0["instructions"]).isdisjoint(set(r1["instructions"])) or not np.array_equal(r0["proprio"], r1["proprio"])


def test_augmentation_changes_pixels_but_keeps_the_scene():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80]
    img = np.stack([xx * 3, yy * 4, (xx + yy) * 2], -1).astype(np.uint8)
    out = augment_image(img, 32, Augment(), rng)
    plain = augment_image(img, 32, None, rng)
    assert out.shape == plain.shape == (32, 32, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - plain.astype(int))
    assert diff.mean() > 1 and diff.mean() < 60
    assert np.corrcoef(out[..., 0].ravel(), plain[..., 0].ravel())[0, 1] > 0.8


def test_bad_requests(data_dir, tmp_path):
    with pytest.raises(DataError, match="has no \\['wrist'\\] camera"):
        next(make_batch_iterator(BatchConfig("toto", data_dir, roles=("primary", "wrist"))))
    mixtures = tmp_path / "mix.toml"
    mixtures.write_text("[bad]\ntoto = 1.0\nwide = 1.0\n")
    write_rlds(data_dir, "wide", [Episode({"primary": np.zeros((2, 8, 8, 3), np.uint8)}, np.zeros((2, 1), np.float32),
                                          np.zeros((2, 26), np.float32), "x")])
    with pytest.raises(DataError, match="mixes action dims"):
        next(make_batch_iterator(BatchConfig("bad", data_dir, batch_size=2),
                                 mixtures_path=mixtures))
    with pytest.raises(DataError, match=">= 1"):
        make_batch_iterator(BatchConfig("toto", data_dir, batch_size=0))


def test_batches_feed_the_tiny_model(data_dir):
    import torch

    import vla
    from vla.data.batches import model_inputs

    model = vla.OpenVLA.from_preset("tiny")
    cfg = BatchConfig("toto", data_dir, batch_size=3, sampling=Sampling(action_chunk=2))
    batch = next(make_batch_iterator(cfg, model.processor))
    assert batch["pixel_values"].shape == (3, 6, 224, 224)
    labels = batch["labels"]
    assert ((labels != -100).sum(1) == 2 * 7 + 1).all()  # a chunk of 2 x 7 action tokens + EOS supervised
    model.train()
    out = model(**model_inputs(batch))
    assert torch.isfinite(out.loss)
    out.loss.backward()
