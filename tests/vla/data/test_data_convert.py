"""vla data convert: folder, robomimic HDF5, LeRobot v2.1 (real AV1 set) and v3.0 -> RLDS."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scripts.data import main as data_main
from vla.data import load_frames
from vla.data.convert import convert
from vla.data.errors import ConvertError, EpisodeError

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def write_video(path, frames: np.ndarray, fps: int = 10, codec: str = "libx264") -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def solid(color, steps: int, size=(32, 48)) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (steps, *size, 3)).copy()


def make_folder_set(root, steps=(4, 5, 3)):
    from PIL import Image

    for i, t in enumerate(steps):
        ep = root / f"ep_{i}"
        (ep / "primary").mkdir(parents=True)
        for k, frame in enumerate(solid(COLORS[i], t)):
            Image.fromarray(frame).save(ep / "primary" / f"{k}.png")
        acts = np.arange(t * 5, dtype=np.float32).reshape(t, 5) + 100 * i
        if i % 2 == 0:
            (ep / "episode.json").write_text(json.dumps(
                {"actions": acts.tolist(), "states": np.zeros((t, 2)).tolist(), "instruction": f"task {i}",
                 "success": True}))
        else:
            np.savez(ep / "episode.npz", actions=acts, states=np.zeros((t, 2)), instruction=f"task {i}")
            write_video(ep / "wrist.mp4", solid(COLORS[3], t))
    return root


def test_folder_format_round_trip_and_selection(tmp_path):
    src = make_folder_set(tmp_path / "My Demos")
    path = convert(src, tmp_path / "out", "folder", episodes=[0, 2], progress=False)
    assert path == tmp_path / "out" / "my_demos" / "1.0.0"
    frames = list(load_frames("my_demos", tmp_path / "out"))
    assert len(frames) == 4 + 3
    assert frames[0]["action"].shape == (5,) and frames[0]["instruction"] == "task 0"
    np.testing.assert_allclose(frames[4]["action"], np.arange(5) + 200)
    assert np.abs(frames[4]["images"]["primary"].astype(int) - COLORS[2]).max() <= 3


def test_folder_with_video_camera(tmp_path):
    src = make_folder_set(tmp_path / "demos", steps=(3, 4))
    (src / "ep_0" / "primary").rename(src / "ep_0" / "unused")  # ep_0 would now lack a primary camera
    with pytest.raises(EpisodeError, match=r"episode 0 \(ep_0\).*no images"):
        convert(src, tmp_path / "out", "folder", progress=False)
    assert not (tmp_path / "out" / "demos").exists()
    convert(src, tmp_path / "out", "folder", episodes=[1], progress=False)
    (f, *_) = load_frames("demos", tmp_path / "out")
    assert set(f["images"]) == {"primary", "wrist"}
    assert np.abs(f["images"]["wrist"].astype(int) - COLORS[3]).mean() < 8


def test_folder_bad_episode_named_and_nothing_left(tmp_path):
    src = make_folder_set(tmp_path / "demos")
    (src / "ep_1" / "primary" / "0.png").unlink()  # 4 frames for 5 actions
    with pytest.raises(ConvertError, match=r"ep_1.*'primary' has 4 frames for 5 actions"):
        convert(src, tmp_path / "out", "folder", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def make_robomimic(path, demos=11, obs=True, env_args=True):
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if env_args:
            data.attrs["env_args"] = json.dumps({"env_name": "PickPlaceCan", "env_kwargs": {}})
        for i in range(demos):
            g = data.create_group(f"demo_{i}")
            t = 3
            g["actions"] = np.full((t, 7), i, np.float32)
            g["states"] = np.zeros((t, 10))
            g["dones"] = np.array([0, 0, 1])
            if obs:
                img = np.zeros((t, 8, 8, 3), np.uint8)
                img[:, 0] = 255  # top row white as stored (OpenGL: it is the bottom of the scene)
                g["obs/agentview_image"] = img
                g["obs/robot0_eef_pos"] = np.zeros((t, 3), np.float32)
                g["obs/robot0_eef_quat"] = np.zeros((t, 4), np.float32)
                g["obs/robot0_gripper_qpos"] = np.zeros((t, 2), np.float32)
    return path


def test_robomimic_numeric_order_flip_and_state(tmp_path):
    src = make_robomimic(tmp_path / "can_demo.hdf5")
    convert(src, tmp_path / "out", "robomimic", episodes=[9, 10], progress=False)
    frames = list(load_frames("can_demo", tmp_path / "out"))
    assert [f["action"][0] for f in frames[::3]] == [9.0, 10.0]  # demo_10 after demo_9
    assert frames[0]["state"].shape == (9,) and frames[0]["instruction"] == "pick place can"
    img = frames[0]["images"]["primary"]
    assert img[-1].mean() > 200 and img[0].mean() < 50  # flipped upright


def test_robomimic_filter_masks(tmp_path):
    import h5py

    src = make_robomimic(tmp_path / "masked.hdf5", demos=4)
    with h5py.File(src, "a") as f:
        f["mask/valid"] = np.array([b"demo_3", b"demo_1"])
        f["mask/stale"] = np.array([b"demo_1", b"demo_99"])
    convert(src, tmp_path / "out", "robomimic", filter_key="valid", progress=False)
    assert [f["action"][0] for f in load_frames("masked", tmp_path / "out")][::3] == [1.0, 3.0]
    with pytest.raises(ConvertError, match=r"mask/stale names demos that are not in the file: \['demo_99'\]"):
        convert(src, tmp_path / "out2", "robomimic", filter_key="stale")
    with pytest.raises(ConvertError, match=r"no filter mask/train; filters: \['stale', 'valid'\]"):
        convert(src, tmp_path / "out2", "robomimic", filter_key="train")


def test_robomimic_without_obs_or_instruction(tmp_path):
    with pytest.raises(ConvertError, match="no obs/ group.*dataset_states_to_obs"):
        convert(make_robomimic(tmp_path / "raw.hdf5", demos=2, obs=False), tmp_path / "out", "robomimic",
                progress=False)
    with pytest.raises(ConvertError, match="pass --instruction"):
        convert(make_robomimic(tmp_path / "noenv.hdf5", demos=2, env_args=False), tmp_path / "out", "robomimic")
    convert(tmp_path / "noenv.hdf5", tmp_path / "out", "robomimic", instruction="lift", progress=False)
    assert next(load_frames("noenv", tmp_path / "out"))["instruction"] == "lift"


@pytest.mark.slow
def test_real_lerobot_v21_av1(shared_dir, tmp_path):
    src = shared_dir / "real" / "unitree_g1_inspire_pick_bottle"
    with pytest.raises(ConvertError, match=r"data/chunk-000/episode_000000\.parquet is missing.*--episodes 1,2,4,5"):
        convert(src, tmp_path, "lerobot", progress=False)
    assert not (tmp_path / "unitree_g1_inspire_pick_bottle").exists()
    rc = data_main(["convert", str(src), str(tmp_path), "--format", "lerobot", "--episodes", "1,2,4,5",
                    "--image-size", "60", "80"])
    assert rc == 0
    frames = list(load_frames("unitree_g1_inspire_pick_bottle", tmp_path))
    assert len(frames) == 393 + 343 + 357 + 368
    assert frames[0]["action"].shape == (26,) and frames[0]["state"].shape == (26,)
    assert frames[0]["instruction"] == "Pick up the yellow bottle on the table."
    assert frames[0]["images"]["primary"].shape == (60, 80, 3) and frames[0]["images"]["primary"].std() > 10
    import pyarrow.parquet as pq

    table = pq.read_table(src / "data" / "chunk-000" / "episode_000001.parquet")
    np.testing.assert_array_equal(frames[5]["action"], np.asarray(table.column("action")[5].as_py(), np.float32))


def make_lerobot_v3(root, lengths=(4, 6), fps=10):
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = "observation.images.front"
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "videos" / key / "chunk-000").mkdir(parents=True)
    info = {"codebase_version": "v3.0", "fps": fps,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {"observation.state": {"dtype": "float32", "shape": [3]},
                         "action": {"dtype": "float32", "shape": [3]},
                         key: {"dtype": "video", "shape": [64, 64, 3]}}}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    rows, eps, frames, start = [], [], [], 0
    for e, n in enumerate(lengths):
        for t in range(n):
            rows.append({"observation.state": [float(e)] * 3, "action": [float(e), float(t), 0.0],
                         "timestamp": t / fps, "frame_index": t, "episode_index": e, "index": start + t,
                         "task_index": e})
        frames.append(solid(COLORS[e], n, (64, 64)))
        eps.append({"episode_index": e, "tasks": [f"task {e}"], "length": n, "data/chunk_index": 0,
                    "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": start + n,
                    f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start / fps, f"videos/{key}/to_timestamp": (start + n) / fps})
        start += n
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.Table.from_pylist(eps), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.Table.from_pylist([{"task_index": e, "task": f"task {e}"} for e in range(len(lengths))]),
                   root / "meta" / "tasks.parquet")
    write_video(root / "videos" / key / "chunk-000" / "file-000.mp4", np.concatenate(frames), fps, codec="libsvtav1")
    return root


def test_lerobot_v30_many_episodes_per_file(tmp_path):
    src = make_lerobot_v3(tmp_path / "v3set")
    convert(src, tmp_path / "out", "lerobot", episodes=[1], progress=False)
    frames = list(load_frames("v3set", tmp_path / "out"))
    assert len(frames) == 6 and frames[0]["instruction"] == "task 1"
    np.testing.assert_array_equal([f["action"][1] for f in frames], np.arange(6))
    for f in frames:  # every frame comes from episode 1's part of the shared video
        assert np.abs(f["images"]["primary"].astype(int) - COLORS[1]).mean() < 12


def test_cli_stats_inspect_and_errors(tmp_path, capsys):
    src = make_folder_set(tmp_path / "demos")
    assert data_main(["convert", str(src), str(tmp_path / "out"), "--format", "folder", "--name", "cli_set",
                     "--episodes", "0,2"]) == 0
    assert data_main(["stats", "cli_set", "--data-dir", str(tmp_path / "out"), "--out", str(tmp_path / "s.json")]) == 0
    stats = json.loads((tmp_path / "s.json").read_text())["cli_set"]
    assert stats["num_transitions"] == 7 and stats["num_trajectories"] == 2
    sheet = tmp_path / "sheet.png"
    assert data_main(["inspect", "cli_set", "--data-dir", str(tmp_path / "out"), "--out", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "episodes (train): 2" in out and "observation/image_primary" in out
    from PIL import Image

    assert Image.open(sheet).size[0] >= 480
    assert data_main(["stats", "cli_sett", "--data-dir", str(tmp_path / "out")]) == 1
    assert "did you mean ['cli_set'" in capsys.readouterr().err
    assert data_main(["convert", str(src), str(tmp_path / "out"), "--format", "folder", "--episodes", "0,9"]) == 1
    assert "episodes [9] are not in" in capsys.readouterr().err


def test_lerobot_missing_video_is_named(tmp_path):
    src = make_lerobot_v3(tmp_path / "v3set", lengths=(3, 3))
    video = src / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
    video.unlink()
    with pytest.raises(ConvertError, match=r"file-000\.mp4 is missing.*--drop-camera"):
        convert(src, tmp_path / "out", "lerobot", progress=False)
    with pytest.raises(ConvertError, match="no camera left"):
        convert(src, tmp_path / "out", "lerobot", drop_cameras=["observation.images.front"], progress=False)
    assert not (tmp_path / "out").exists()
