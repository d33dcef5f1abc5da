"""`vla rth label` on the real Bridge shards and on written RLDS sets; refusals name the field."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

import vla
from scripts.cli import main as vla_main
from vla.data.rlds_writer import Episode, write_rlds
from vla.data.statistics import compute_statistics
from vla.rth.errors import MotionSpecError, NoEndEffectorError
from vla.rth.label import MOTION_FIELD, LabelConfig, Signal, label_dataset
from vla.rth.motions import STOP, label_motions, motion_axes
from vla.rth.query import rth_info


def _read_motions(path):
    ds = tfds.builder_from_directory(str(path)).as_dataset(split="train",
                                                            decoders={"steps": tfds.decode.SkipDecoding()})
    out = []
    for ep in tfds.as_numpy(ds):
        steps = ep["steps"]
        out.append(([m.decode() for m in steps[MOTION_FIELD]], steps["action"]))
    return out


def test_real_bridge_every_step_labelled_gripper_transitions_named(shared_dir, tmp_path, capsys):
    rc = vla_main(["rth", "label", "bridge_dataset", "--data-dir", str(shared_dir / "real"), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert rc == 0
    episodes = _read_motions(tmp_path / "bridge_dataset_rth" / "1.0.0")
    assert len(episodes) == 25 and sum(len(m) for m, _ in episodes) == 250
    vocab = {m for motions, _ in episodes for m in motions}
    print(f"Bridge (25 episodes, 250 steps): {len(vocab)} distinct motions")  # the vocabulary size, reported
    assert f"{len(vocab)} distinct motions over 250 steps" in printed
    assert len(vocab) > 5 and STOP in vocab
    transitions = 0
    for motions, actions in episodes:
        assert all(m.strip() for m in motions)
        g = actions[:, 6]
        for t in np.flatnonzero(np.abs(np.diff(g)) > 0.5) + 1:  # the gripper command flips at step t
            transitions += 1
            word = "close gripper" if g[t] < g[t - 1] else "open gripper"
            assert word in motions[t] and word in motions[t - 1], (t, motions)
    assert transitions >= 10
    for motions, _ in episodes:  # every label reads back in the default vocabulary
        assert all(motion_axes(m) is not None for m in motions)


def test_bridge_from_proprio_poses(shared_dir, tmp_path):
    report = label_dataset("bridge_dataset", shared_dir / "real", tmp_path, LabelConfig(signal=Signal.PROPRIO))
    assert report.steps == 250 and sum(report.counts.values()) == 250
    assert report.spec.source.value == "proprio"
    assert any("gripper" in m for m in report.counts)


def _sim_like(tmp_path, name="demo", action_dim=7):
    a = np.zeros((6, action_dim), np.float32)
    a[:, 0] = 0.02
    if action_dim == 7:
        a[:, 6] = [1, 1, 1, 0, 0, 0]
    ep = Episode({"primary": np.full((6, 8, 8, 3), 90, np.uint8)}, np.zeros((6, 3), np.float32), a, "push")
    write_rlds(tmp_path / "in", name, [ep, ep])
    return a


def test_native_dataset_needs_to_be_declared_eef(tmp_path):
    a = _sim_like(tmp_path)
    with pytest.raises(NoEndEffectorError, match="action.encoding 'native' and state_encoding 'native'.*"
                                                 "--native-actions-are-eef-delta"):
        label_dataset("demo", tmp_path / "in", tmp_path / "out")
    config = LabelConfig(threshold=0.01, absolute=True, native_actions_are_eef_delta=True)
    report = label_dataset("demo", tmp_path / "in", tmp_path / "out", config)
    expected = label_motions(a, report.spec)
    assert [m for m, _ in _read_motions(report.path)] == [expected, expected]
    assert expected[1] == "close gripper and move arm forward"  # change 1.0 = 100 thresholds vs 2
    stats = compute_statistics("demo_rth", tmp_path / "out")  # the labelled set reads like any other
    assert stats["num_transitions"] == 12
    # `vla rth train` on it: an RT-H checkpoint with the dataset's statistics and motions
    args = ["rth", "train", "demo_rth", "--data-dir", str(tmp_path / "out"), "--out", str(tmp_path / "ckpt"),
            "--steps", "2", "--batch-size", "2"]
    assert vla_main(args) == 0
    model = vla.OpenVLA.from_pretrained(tmp_path / "ckpt")
    assert set(rth_info(model).vocabulary) == set(expected) and "demo_rth" in model.norm_stats


def test_refusals(tmp_path, capsys):
    _sim_like(tmp_path, "joints", action_dim=26)
    rc = vla_main(["rth", "label", "joints", "--data-dir", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert rc == 1 and "NoEndEffectorError" in capsys.readouterr().err
    with pytest.raises(MotionSpecError, match="26-dim"):
        label_dataset("joints", tmp_path / "in", tmp_path / "out", LabelConfig(native_actions_are_eef_delta=True))
    with pytest.raises(MotionSpecError, match="> 0"):
        label_dataset("joints", tmp_path / "in", tmp_path / "out",
                      LabelConfig(threshold=-1, absolute=True, native_actions_are_eef_delta=True))
    assert not (tmp_path / "out" / "joints_rth").exists()
