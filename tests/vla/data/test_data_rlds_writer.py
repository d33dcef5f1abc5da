"""write_rlds: real tfds shards that tfds.builder_from_directory reads back unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vla.data.errors import DatasetExistsError, EpisodeError
from vla.data.rlds_writer import Episode, write_rlds


def read_episodes(builder) -> list[dict]:
    """Every episode with its steps stacked into arrays (tfds yields steps as a nested dataset)."""
    out = []
    for ep in builder.as_dataset(split="train", shuffle_files=False):
        steps = ep["steps"].batch(10_000).get_single_element()
        out.append({"steps": tfds.as_numpy(steps), "episode_metadata": tfds.as_numpy(ep["episode_metadata"])})
    return out


def make_episode(seed: int, steps: int = 5, size: int = 16, success: bool | None = True, **kw) -> Episode:
    rng = np.random.default_rng(seed)
    # smooth images so JPEG round trips closely
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = (ramp[None, :, None, None] + ramp[None, None, :, None]) / 2
    frames = np.clip(base + rng.integers(0, 40, (steps, 1, 1, 3)), 0, 255).astype(np.uint8)
    return Episode(
        images={"primary": frames, "wrist": frames[:, ::-1].copy()},
        state=rng.normal(size=(steps, 8)).astype(np.float32),
        action=rng.normal(size=(steps, 7)).astype(np.float32),
        instruction=f"pick block {seed}",
        success=success,
        **kw,
    )


def test_round_trip_through_tfds(tmp_path):
    eps = [make_episode(i, steps=3 + i, success=[True, False, None][i],
                        extras={"motion_source": np.arange(3 + i, dtype=np.int32),
                                "language_motion": [f"move {j}" for j in range(3 + i)]},
                        metadata={"file_path": f"demo_{i}.hdf5", "operator": "ann"})
           for i in range(3)]
    path = write_rlds(tmp_path, "my_demos", eps, description="three demos", image_encoding="png")
    assert path == tmp_path / "my_demos" / "1.0.0"
    assert sorted(p.name for p in path.iterdir()) == [
        "dataset_info.json", "features.json", "my_demos-train.tfrecord-00000-of-00001"]
    assert [p.name for p in (tmp_path / "my_demos").iterdir()] == ["1.0.0"]  # no temp folder left

    builder = tfds.builder_from_directory(str(path))
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.description == "three demos"
    read = read_episodes(builder)
    by_id = {int(r["episode_metadata"]["episode_id"]): r for r in read}
    for i, ep in enumerate(eps):
        r = by_id[i]
        steps = r["steps"]
        np.testing.assert_array_equal(steps["observation"]["image_primary"], ep.images["primary"])  # png: lossless
        np.testing.assert_array_equal(steps["observation"]["image_wrist"], ep.images["wrist"])
        np.testing.assert_array_equal(steps["observation"]["state"], ep.state)
        np.testing.assert_array_equal(steps["action"], ep.action)
        assert {s.decode() for s in steps["language_instruction"]} == {ep.instruction}
        np.testing.assert_array_equal(steps["is_first"], np.arange(len(ep)) == 0)
        np.testing.assert_array_equal(steps["is_last"], np.arange(len(ep)) == len(ep) - 1)
        assert steps["reward"][-1] == (0.0 if ep.success is False else 1.0) and steps["reward"][:-1].sum() == 0
        np.testing.assert_array_equal(steps["motion_source"], ep.extras["motion_source"])
        assert [s.decode() for s in steps["language_motion"]] == ep.extras["language_motion"]
        meta = r["episode_metadata"]
        assert bool(meta["success"]) == bool(ep.success) and bool(meta["success_known"]) == (ep.success is not None)
        assert meta["file_path"].decode() == f"demo_{i}.hdf5" and meta["operator"].decode() == "ann"


def test_jpeg_default_close_and_tfds_builder_by_name(tmp_path):
    ep = make_episode(0, size=32)
    write_rlds(tmp_path, "jpeg_set", [ep])
    builder = tfds.builder("jpeg_set", data_dir=str(tmp_path))
    (r,) = read_episodes(builder)
    got = r["steps"]["observation"]["image_primary"].astype(int)
    assert np.abs(got - ep.images["primary"]).mean() < 2.0


def test_generator_input_and_several_shards(tmp_path, monkeypatch):
    import vla.data.rlds_writer as writer

    monkeypatch.setattr(writer, "SHARD_MAX_BYTES", 1)  # a shard per episode
    path = write_rlds(tmp_path, "gen", (make_episode(i) for i in range(3)))
    shards = sorted(p.name for p in path.glob("*.tfrecord*"))
    assert shards == [f"gen-train.tfrecord-0000{i}-of-00003" for i in range(3)]
    assert tfds.builder_from_directory(str(path)).info.splits["train"].shard_lengths == [1, 1, 1]


@pytest.mark.parametrize("bad, match", [
    (lambda e: Episode({"primary": e.images["primary"]}, e.state[:-1], e.action, "x"), "state must be"),
    (lambda e: Episode({"top": e.images["primary"]}, e.state, e.action, "x"), "unknown camera role 'top'"),
    (lambda e: Episode({"wrist": e.images["primary"]}, e.state, e.action, "x"), "no 'primary'"),
    (lambda e: Episode({"primary": e.images["primary"].astype(np.float32)}, e.state, e.action, "x"), "uint8"),
    (lambda e: Episode(e.images, e.state, np.full_like(e.action, np.nan), "x"), "NaN"),
    (lambda e: Episode(e.images, e.state, e.action, "x", extras={"action": e.action}), "reserved"),
    (lambda e: Episode(e.images, e.state, e.action[:, :6], "x"), "episode 1 does not match"),
])
def test_bad_episodes_raise_and_leave_nothing(tmp_path, bad, match):
    def episodes():
        yield make_episode(0)
        yield bad(make_episode(1))

    with pytest.raises(EpisodeError, match=match):
        write_rlds(tmp_path, "bad", episodes())
    assert not (tmp_path / "bad").exists()


def test_existing_dataset_refused_unless_overwrite(tmp_path):
    write_rlds(tmp_path, "ds", [make_episode(0)])
    with pytest.raises(DatasetExistsError, match="already exists"):
        write_rlds(tmp_path, "ds", [make_episode(1)])
    path = write_rlds(tmp_path, "ds", [make_episode(1), make_episode(2)], overwrite=True)
    assert tfds.builder_from_directory(str(path)).info.splits["train"].num_examples == 2
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["1.0.0"]


def test_no_episodes_and_bad_names(tmp_path):
    with pytest.raises(EpisodeError, match="no episodes"):
        write_rlds(tmp_path, "empty", [])
    with pytest.raises(EpisodeError, match="lower-case"):
        write_rlds(tmp_path, "My-Set", [make_episode(0)])
    assert list(tmp_path.iterdir()) == []
