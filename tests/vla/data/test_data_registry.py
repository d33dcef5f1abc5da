"""The OXE registry as data, the one standardization engine, and opening datasets from a data_dir."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from vla.data.errors import (DataDirError, DataError, RegistryError, SchemaMismatchError, ShardError,
                             UnknownDatasetError)
from vla.data.registry import (Gripper, load_mixtures, load_registry, parse_entry, resolve_mixture)
from vla.data.rlds import decode_image, iter_episodes, load_frames, open_dataset
from vla.data.standardize import GRIPPER_CONVERTERS, axis_angle_to_euler, quat_to_euler
from vla.data.synthetic import write_synthetic

REGISTRY = load_registry()
REQUIRED = """bridge_orig bridge_dataset fractal20220817_data kuka taco_play jaco_play berkeley_cable_routing
roboturk viola berkeley_autolab_ur5 toto language_table stanford_hydra_dataset_converted_externally_to_rlds
austin_buds_dataset_converted_externally_to_rlds nyu_franka_play_dataset_converted_externally_to_rlds
furniture_bench_dataset_converted_externally_to_rlds ucsd_kitchen_dataset_converted_externally_to_rlds
austin_sailor_dataset_converted_externally_to_rlds austin_sirius_dataset_converted_externally_to_rlds
dlr_edan_shared_control_converted_externally_to_rlds iamlab_cmu_pickup_insert_converted_externally_to_rlds
utaustin_mutex berkeley_fanuc_manipulation cmu_stretch bc_z fmb_dataset dobbe droid""".split()


def test_registry_has_every_required_dataset():
    assert set(REQUIRED) <= set(REGISTRY.entries)
    assert REGISTRY.entries["bridge_dataset"].images == {"primary": "observation/image_0",
                                                         "secondary": "observation/image_1"}


@pytest.mark.parametrize("name", REQUIRED)
def test_entry_shard_reads_back_standardized(tmp_path, name):
    entry = REGISTRY.get(name)
    write_synthetic(tmp_path, entry, num_episodes=2, steps=3, image_size=(24, 32))
    source = open_dataset(name, tmp_path)
    episodes = list(iter_episodes(source))
    assert len(episodes) == 2
    for ep in episodes:
        assert ep.action.shape == (3, 7) and ep.action.dtype == np.float32
        assert np.all((ep.action[:, 6] >= 0) & (ep.action[:, 6] <= 1)), "gripper must be in [0, 1]"
        assert set(ep.images) == set(entry.images)
        assert decode_image(ep.images["primary"][0]).shape == (24, 32, 3)
        assert ep.state.shape[0] == 3
        assert all(s.startswith("task ") and s.endswith(name) for s in ep.instructions)


def test_language_table_utf8_instruction_and_planar_padding(tmp_path):
    write_synthetic(tmp_path, REGISTRY.get("language_table"), num_episodes=1, steps=2)
    (ep,) = iter_episodes(open_dataset("language_table", tmp_path))
    assert list(ep.instructions) == ["task 0 of language_table"] * 2
    np.testing.assert_array_equal(ep.action[:, 2:6], 0)  # z and rotation padded
    np.testing.assert_array_equal(ep.action[:, 6], 1)  # always open


def test_gripper_conventions():
    x = np.array([0.0, 0.25, 1.0], np.float32)
    np.testing.assert_allclose(GRIPPER_CONVERTERS[Gripper.ONE_IS_CLOSED](x, "t"), [1, 0.75, 0])
    s = np.array([-1.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(GRIPPER_CONVERTERS[Gripper.POSITIVE_IS_CLOSED](s, "t"), [1, 0, 1])
    np.testing.assert_allclose(GRIPPER_CONVERTERS[Gripper.POSITIVE_IS_OPEN](s, "t"), [0, 1, 0])
    rel = np.array([0, 0, 1, 0, 0, -1, 0], np.float32)  # close at 2, open at 5
    np.testing.assert_allclose(GRIPPER_CONVERTERS[Gripper.RELATIVE_POSITIVE_IS_CLOSED](rel, "t"),
                               [1, 1, 0, 0, 0, 1, 1])
    with pytest.raises(DataError, match="outside"):
        GRIPPER_CONVERTERS[Gripper.ONE_IS_OPEN](np.array([1.5], np.float32), "bridge episode 3")


def test_rotation_conversions_match_known_values():
    # 90 degrees about z: quaternion (0, 0, sin 45, cos 45)
    q = np.array([[0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]])
    np.testing.assert_allclose(quat_to_euler(q), [[0, 0, np.pi / 2]], atol=1e-7)
    np.testing.assert_allclose(axis_angle_to_euler(np.array([[0.3, 0, 0]])), [[0.3, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(axis_angle_to_euler(np.zeros((1, 3))), [[0, 0, 0]], atol=1e-7)


def test_bad_registry_words_raise_with_allowed_ones():
    table = dict(REGISTRY.get("bridge_dataset").raw)
    with pytest.raises(RegistryError, match="did you mean 'one_is_open'"):
        parse_entry("x", {**table, "action": {**table["action"], "gripper_convention": "one_is_opn"}})
    with pytest.raises(RegistryError, match="unknown keys"):
        parse_entry("x", {**table, "camera": "front"})
    with pytest.raises(RegistryError, match="not declared in features"):
        parse_entry("x", {**table, "features": {"action": "float32[7]", "language_instruction": "string"}})
    with pytest.raises(RegistryError, match="image role 'top'"):
        parse_entry("x", {**table, "images": {"primary": "observation/image_0", "top": "observation/image_1"}})


def test_unknown_name_suggests_close_names(tmp_path):
    write_synthetic(tmp_path, REGISTRY.get("toto"), num_episodes=1, steps=2)
    with pytest.raises(UnknownDatasetError, match=r"did you mean \['toto'"):
        open_dataset("totoo", tmp_path)
    with pytest.raises(UnknownDatasetError, match="bridge_dataset"):
        REGISTRY.get("bridge_datset")


def test_missing_data_dir_and_missing_registered_dataset(tmp_path):
    with pytest.raises(DataDirError, match="does not exist"):
        open_dataset("bridge_dataset", tmp_path / "nope")
    with pytest.raises(DataDirError, match="no dataset 'droid'"):
        open_dataset("droid", tmp_path)


def test_entry_keys_not_in_features_names_both(tmp_path):
    write_synthetic(tmp_path, REGISTRY.get("toto"), num_episodes=1, steps=2)
    shutil.move(tmp_path / "toto", tmp_path / "viola")  # a toto-shaped dataset under viola's name
    with pytest.raises(SchemaMismatchError, match=r"\[viola\].*observation/agentview_rgb.*features.json"):
        open_dataset("viola", tmp_path)


def test_corrupt_shard_is_named(tmp_path):
    path = write_synthetic(tmp_path, REGISTRY.get("toto"), num_episodes=3, steps=2)
    (shard,) = path.glob("*.tfrecord*")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=shard.name):
        list(iter_episodes(open_dataset("toto", tmp_path)))


def test_distinct_episodes_per_rank(tmp_path):
    write_synthetic(tmp_path, REGISTRY.get("toto"), num_episodes=5, steps=2)
    source = open_dataset("toto", tmp_path)
    ranks = [{ep.episode_id for ep in iter_episodes(source, rank=r, world_size=2)} for r in range(2)]
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == 5
    with pytest.raises(DataError, match="fewer than world_size=8"):
        next(iter_episodes(source, rank=0, world_size=8))


def test_mixtures_file():
    mixtures = load_mixtures()
    soup = mixtures["oxe_magic_soup"]
    assert set(soup.weights) <= set(REGISTRY.entries) and len(soup.weights) >= 25
    assert resolve_mixture("my_demos", mixtures).weights == {"my_demos": 1.0}


def test_real_bridge_frames(shared_dir):
    frames = list(load_frames("bridge_dataset", shared_dir / "real"))
    assert len(frames) == 250
    f = frames[0]
    assert f["images"]["primary"].shape == (64, 64, 3) and f["action"].shape == (7,)
    assert f["instruction"] in {"flip pot upright which is in sink", "put carrot on plate",
                                "put cup from counter or drying rack into sink", "turn lever vertical to front"}


def test_shards_named_without_of_n_suffix(tmp_path):
    # some published datasets name shards NAME-train.tfrecord-00000; dataset_info.json says so
    import json

    path = write_synthetic(tmp_path, REGISTRY.get("toto"), num_episodes=2, steps=2)
    (shard,) = path.glob("*.tfrecord*")
    shard.rename(path / "toto-train.tfrecord-00000")
    info = json.loads((path / "dataset_info.json").read_text())
    info["splits"][0]["filepathTemplate"] = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}"
    (path / "dataset_info.json").write_text(json.dumps(info))
    assert len(list(iter_episodes(open_dataset("toto", tmp_path)))) == 2
