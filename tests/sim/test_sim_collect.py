"""Scripted demos -> RLDS, read back through the data pipeline with no special case."""
from __future__ import annotations

import numpy as np
import pytest

from sim.collect import CollectConfig, assign_variants, collect, dataset_name, parse_mix
from sim.errors import CollectError, UnknownTaskError

TASK = "widowx-pick-block"


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    cfg = CollectConfig(TASK, 4, out, mix=parse_mix("expert:0.5,suboptimal:0.5"), image_size=32, seed=7)
    return cfg, collect(cfg)


def test_collect_writes_a_dataset_the_pipeline_reads(collected):
    from vla.data import load_frames

    cfg, result = collected
    assert result.path == cfg.out / "sim_widowx_pick_block" / "1.0.0"
    frames = list(load_frames(dataset_name(TASK), cfg.out))
    assert len(frames) == result.steps
    first = frames[0]
    assert set(first["images"]) == {"primary", "wrist"} and first["images"]["primary"].shape == (32, 32, 3)
    assert first["state"].shape == (7,) and first["action"].shape == (7,)
    assert first["instruction"] == "pick up the red block"
    assert len({f["episode_id"] for f in frames}) == 4
    actions = np.stack([f["action"] for f in frames])
    assert np.abs(actions[:, :3]).max() <= 0.05 and set(np.unique(actions[:, 6])) <= {0.0, 1.0}


def test_success_flags_and_variants_are_recorded(collected):
    import tensorflow_datasets as tfds

    cfg, result = collected
    builder = tfds.builder_from_directory(str(result.path))
    metas = [ep["episode_metadata"] for ep in tfds.as_numpy(builder.as_dataset(split="train"))]
    variants = sorted(m["expert"].decode() for m in metas)
    assert variants == ["expert", "expert", "suboptimal", "suboptimal"]
    flags = {m["expert"].decode(): [] for m in metas}
    for m in metas:
        flags[m["expert"].decode()].append(bool(m["success"]))
    assert flags["expert"] == [True, True]
    assert result.successes["expert"] == (2, 2)
    assert sum(s for s, _ in result.successes.values()) == sum(bool(m["success"]) for m in metas)


def test_collected_statistics_come_from_the_data_pipeline(collected):
    from vla.data import compute_statistics

    cfg, result = collected
    stats = compute_statistics(dataset_name(TASK), cfg.out)
    assert stats["num_trajectories"] == 4 and stats["num_transitions"] == result.steps
    assert len(stats["action"]["q01"]) == 7


def test_existing_dataset_is_not_overwritten(collected):
    cfg, _ = collected
    with pytest.raises(CollectError, match="--overwrite"):
        collect(cfg)


def test_two_workers_write_the_same_episodes(collected, tmp_path):
    from vla.data import load_frames

    cfg, _ = collected
    parallel = CollectConfig(TASK, 4, tmp_path, workers=2, mix=cfg.mix, image_size=32, seed=7)
    collect(parallel)
    a = np.stack([f["action"] for f in load_frames(dataset_name(TASK), cfg.out)])
    b = np.stack([f["action"] for f in load_frames(dataset_name(TASK), tmp_path)])
    np.testing.assert_array_equal(a, b)


def test_mix_parsing_and_assignment():
    assert parse_mix("expert:0.4,noisy:0.3,suboptimal:0.3") == (("expert", 0.4), ("noisy", 0.3), ("suboptimal", 0.3))
    variants = assign_variants(parse_mix("expert:0.4,noisy:0.3,suboptimal:0.3"), 10, seed=0)
    assert sorted(variants).count("expert") == 4 and variants.count("noisy") == 3 and len(variants) == 10
    assert variants == assign_variants(parse_mix("expert:0.4,noisy:0.3,suboptimal:0.3"), 10, seed=0)
    for bad, msg in [("expert", "VARIANT:SHARE"), ("perfect:1", "unknown"), ("expert:0.5", "summing to 1"),
                     ("expert:x", "not a number"), ("expert:0.5,expert:0.5", "once")]:
        with pytest.raises(CollectError, match=msg):
            parse_mix(bad)


def test_bad_collect_arguments(tmp_path):
    with pytest.raises(CollectError, match="episodes"):
        CollectConfig(TASK, 0, tmp_path)
    with pytest.raises(UnknownTaskError, match="known tasks"):
        collect(CollectConfig("widowx-fly", 1, tmp_path))
