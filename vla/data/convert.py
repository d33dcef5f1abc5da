"""Convert a user's demo set (folder, robomimic HDF5, LeRobot v2.1/v3.0) into RLDS shards.

Every reader lists the source's episodes with the files each needs; the converter checks the
selected episodes' files before writing anything (naming the first missing one), then streams
episodes through `write_rlds`, which writes atomically. Native state/action dimensions are kept.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from vla.data.errors import ConvertError, DataError
from vla.data.rlds_writer import ROLES, Episode, write_rlds

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class SourceEpisode:
    """One episode of a source demo set, loaded on demand."""

    index: int  # what --episodes selects
    label: str  # how messages name it (a file or group name)
    files: tuple[pathlib.Path, ...]  # files it needs; checked before anything is written
    load: Callable[[], Episode]


def _natural_key(text: str) -> list:
    """demo_10 after demo_9."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def decode_video(path: pathlib.Path, start_s: float = 0.0, stop_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames uint8 [N, H, W, 3] and their times in seconds, from `start_s` up to `stop_s` (PyAV)."""
    import av

    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start_s > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else len(times) / float(stream.average_rate)
                if t < start_s - 1e-4:
                    continue
                if stop_s is not None and t >= stop_s - 1e-4:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
    except av.error.FFmpegError as e:
        raise ConvertError(f"cannot decode video {path}: {e}") from e
    if not frames:
        raise ConvertError(f"video {path} has no frames in [{start_s}, {stop_s}) s")
    return np.stack(frames), np.asarray(times)


def frames_at(path: pathlib.Path, timestamps: np.ndarray, fps: float, offset_s: float = 0.0) -> np.ndarray:
    """The video frame nearest to each timestamp (seconds from `offset_s`), within half a frame."""
    frames, times = decode_video(path, offset_s, offset_s + float(timestamps.max()) + 1.0 / fps)
    target = offset_s + timestamps
    if len(times) == 1:
        idx = np.zeros(len(target), int)
    else:
        right = np.clip(np.searchsorted(times, target), 1, len(times) - 1)
        idx = np.where(np.abs(times[right - 1] - target) <= np.abs(times[right] - target), right - 1, right)
    err = np.abs(times[idx] - target)
    if err.max() > 0.5 / fps + 1e-3:
        worst = int(err.argmax())
        raise ConvertError(f"video {path} has no frame within half a frame of t={timestamps[worst]:.3f}s "
                           f"(nearest {times[idx[worst]] - offset_s:.3f}s); the video is shorter than its table")
    return frames[idx]


# ----------------------------------------------------------------------------------- folder
def _load_folder_episode(folder: pathlib.Path, instruction: str | None) -> Episode:
    if (folder / "episode.json").is_file():
        meta = json.loads((folder / "episode.json").read_text())
        arrays = {k: np.asarray(meta[k], np.float32) for k in ("actions", "states") if k in meta}
    else:
        with np.load(folder / "episode.npz", allow_pickle=False) as npz:
            meta = {k: npz[k].item() if npz[k].ndim == 0 else npz[k] for k in npz.files}
        arrays = {k: np.asarray(meta[k], np.float32) for k in ("actions", "states") if k in meta}
    for key in ("actions", "states"):
        if key not in arrays:
            raise ConvertError(f"{folder}: {key!r} is missing from its episode file; see datasets/folder_format.md")
    text = meta.get("instruction", instruction)
    if not isinstance(text, str):
        raise ConvertError(f"{folder}: no instruction string in the episode file; add one or pass --instruction")
    images = {}
    for role in ROLES:
        if (folder / role).is_dir():
            files = sorted((p for p in (folder / role).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                           key=lambda p: _natural_key(p.name))
            from vla.data.rlds import decode_image

            images[role] = np.stack([decode_image(p.read_bytes()) for p in files]) if files else None
        elif (folder / f"{role}.mp4").is_file():
            images[role] = decode_video(folder / f"{role}.mp4")[0]
        if role in images and (images[role] is None or len(images[role]) != len(arrays["actions"])):
            n = 0 if images[role] is None else len(images[role])
            raise ConvertError(f"{folder}: camera {role!r} has {n} frames for {len(arrays['actions'])} actions")
    success = meta.get("success")
    return Episode(images=images, state=arrays["states"], action=arrays["actions"], instruction=text,
                   success=None if success is None else bool(success), metadata={"file_path": folder.name})


def read_folder(src: pathlib.Path, instruction: str | None = None) -> list[SourceEpisode]:
    """Episodes of the simple folder format (datasets/folder_format.md)."""
    folders = sorted((p for p in src.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
    if not folders:
        raise ConvertError(f"{src} has no episode subfolders; see datasets/folder_format.md")
    out = []
    for i, f in enumerate(folders):
        episode_file = f / "episode.json" if (f / "episode.json").exists() else f / "episode.npz"
        out.append(SourceEpisode(i, f.name, (episode_file,), lambda f=f: _load_folder_episode(f, instruction)))
    return out


# -------------------------------------------------------------------------------- robomimic
ROBOMIMIC_CAMERAS = {"agentview_image": "primary", "robot0_eye_in_hand_image": "wrist",
                     "frontview_image": "secondary"}  # robosuite camera -> role
ROBOMIMIC_STATE = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")  # proprio when present


def _robomimic_episode(path: pathlib.Path, demo: str, instruction: str) -> Episode:
    import h5py

    with h5py.File(path, "r") as f:
        group = f["data"][demo]
        if "obs" not in group:
            raise ConvertError(
                f"{path} {demo} has states and actions but no obs/ group (a raw robosuite demo); render "
                "observations first with robomimic's dataset_states_to_obs.py, then convert that file")
        obs = group["obs"]
        actions = np.asarray(group["actions"], np.float32)
        images = {}
        for key in obs:
            if obs[key].ndim == 4:
                if key not in ROBOMIMIC_CAMERAS:
                    raise ConvertError(f"{path} {demo}: camera {key!r} has no role; known: {ROBOMIMIC_CAMERAS}")
                images[ROBOMIMIC_CAMERAS[key]] = np.ascontiguousarray(np.asarray(obs[key], np.uint8)[:, ::-1])  # OpenGL origin
        low_dim = [k for k in ROBOMIMIC_STATE if k in obs] or sorted(k for k in obs if obs[k].ndim == 2)
        state = np.concatenate([np.asarray(obs[k], np.float32) for k in low_dim], -1) if low_dim \
            else np.zeros((len(actions), 0), np.float32)
        success = bool(np.asarray(group["dones"])[-1]) if "dones" in group else None
    return Episode(images=images, state=state, action=actions, instruction=instruction, success=success,
                   metadata={"file_path": f"{path.name}/{demo}", "gripper_convention": "positive_is_closed"})


def read_robomimic(src: pathlib.Path, instruction: str | None = None, filter_key: str | None = None
                   ) -> list[SourceEpisode]:
    """Episodes of a robomimic/robosuite HDF5 file, demos in numeric order (or those of mask/<filter_key>)."""
    import h5py

    try:
        with h5py.File(src, "r") as f:
            if "data" not in f:
                raise ConvertError(f"{src} has no 'data' group; is it a robomimic file?")
            demos = sorted(f["data"].keys(), key=_natural_key)
            if filter_key is not None:
                masks = sorted(f["mask"].keys()) if "mask" in f else []
                if filter_key not in masks:
                    raise ConvertError(f"{src} has no filter mask/{filter_key}; filters: {masks or 'none'}")
                listed = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][filter_key][()]]
                absent = [n for n in listed if n not in demos]
                if absent:
                    raise ConvertError(f"{src} mask/{filter_key} names demos that are not in the file: {absent[:5]}; "
                                       "fix the mask or convert without --filter")
                demos = sorted(listed, key=_natural_key)
            env_args = f["data"].attrs.get("env_args")
    except OSError as e:
        raise ConvertError(f"cannot open {src} as HDF5: {e}") from e
    if instruction is None:
        env = json.loads(env_args).get("env_name") if env_args is not None else None
        if env is None:
            raise ConvertError(f"{src} has no data.attrs['env_args'] to name the task; pass --instruction")
        instruction = re.sub(r"(?<!^)(?=[A-Z])", " ", env).lower().replace("_", " ")
    return [SourceEpisode(i, d, (src,), lambda d=d: _robomimic_episode(src, d, instruction))
            for i, d in enumerate(demos)]


# ---------------------------------------------------------------------------------- LeRobot
def _column(table, key: str) -> np.ndarray:
    import pyarrow as pa

    col = table.column(key).combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def _camera_roles(keys: Sequence[str], where: str) -> dict[str, str]:
    """Video keys -> roles: names with 'wrist' are the wrist camera, the rest primary then secondary."""
    roles, free = {}, ["primary", "secondary"]
    for key in sorted(keys, key=lambda k: ("wrist" in k, k)):
        role = "wrist" if "wrist" in key and "wrist" not in roles.values() else (free.pop(0) if free else None)
        if role is None:
            raise ConvertError(f"{where}: cameras {list(keys)} are more than the roles {ROLES}; pass "
                               "drop_cameras (--drop-camera KEY) for the extra ones")
        roles[key] = role
    return roles


@dataclasses.dataclass(frozen=True)
class _LeRobotInfo:
    root: pathlib.Path
    info: dict
    fps: float
    version: str
    cameras: dict[str, str]  # video/image key -> role
    image_keys: tuple[str, ...]  # stored in the parquet as images rather than videos


def _lerobot_info(src: pathlib.Path, drop_cameras: Sequence[str]) -> _LeRobotInfo:
    path = src / "meta" / "info.json"
    if not path.is_file():
        raise ConvertError(f"{src} has no meta/info.json; is it a LeRobot dataset?")
    info = json.loads(path.read_text())
    version = str(info.get("codebase_version", ""))
    if version not in ("v2.1", "v3.0"):
        raise ConvertError(f"{path}: codebase_version {version!r} is not supported; use v2.1 or v3.0 "
                           "(LeRobot's own converter upgrades older sets)")
    feats = info["features"]
    for key in ("observation.state", "action"):
        if key not in feats:
            raise ConvertError(f"{path} has no {key!r} feature; features: {sorted(feats)}")
    visual = [k for k, v in feats.items() if v.get("dtype") in ("video", "image")]
    unknown = [k for k in drop_cameras if k not in visual]
    if unknown:
        raise ConvertError(f"drop_cameras {unknown} are not cameras of {src}; cameras: {visual}")
    if drop_cameras:
        logger.warning("converting %s without cameras %s, as asked", src, list(drop_cameras))
    kept = [k for k in visual if k not in drop_cameras]
    if not kept:
        raise ConvertError(f"{src}: no camera left to convert (cameras: {visual})")
    image_keys = tuple(k for k in kept if feats[k]["dtype"] == "image")
    return _LeRobotInfo(src, info, float(info["fps"]), version, _camera_roles(kept, str(src)), image_keys)


def _lerobot_episode(li: _LeRobotInfo, table, task: str, video: dict[str, tuple[pathlib.Path, float]],
                     label: str) -> Episode:
    from vla.data.rlds import decode_image

    ts = _column(table, "timestamp").astype(np.float64).reshape(-1)
    images = {}
    for key, role in li.cameras.items():
        if key in li.image_keys:
            structs = table.column(key).to_pylist()
            images[role] = np.stack([decode_image(s["bytes"]) for s in structs])
        else:
            path, offset = video[key]
            images[role] = frames_at(path, ts, li.fps, offset)
    return Episode(images=images, state=_column(table, "observation.state").astype(np.float32),
                   action=_column(table, "action").astype(np.float32), instruction=task,
                   metadata={"file_path": label})


def _v21_episodes(li: _LeRobotInfo) -> list[SourceEpisode]:
    import pyarrow.parquet as pq

    meta = li.root / "meta"
    tasks = {int(t["task_index"]): t["task"] for t in map(json.loads, (meta / "tasks.jsonl").read_text().splitlines()) if t}
    rows = [json.loads(line) for line in (meta / "episodes.jsonl").read_text().splitlines() if line.strip()]
    chunk_size = int(li.info.get("chunks_size", 1000))
    out = []
    for i, row in enumerate(sorted(rows, key=lambda r: r["episode_index"])):
        ep = int(row["episode_index"])
        fmt = {"episode_chunk": ep // chunk_size, "episode_index": ep}
        data = li.root / li.info["data_path"].format(**fmt)
        videos = {k: li.root / li.info["video_path"].format(video_key=k, **fmt)
                  for k in li.cameras if k not in li.image_keys}
        task_text = row["tasks"][0] if row.get("tasks") else None

        def load(data=data, videos=videos, task_text=task_text, label=data.name):
            table = pq.read_table(data)
            text = task_text if task_text is not None else tasks[int(_column(table, "task_index")[0])]
            return _lerobot_episode(li, table, text, {k: (p, 0.0) for k, p in videos.items()}, label)

        out.append(SourceEpisode(ep, f"episode_{ep:06d}", (data, *videos.values()), load))
    return out


def _v30_episodes(li: _LeRobotInfo) -> list[SourceEpisode]:
    import pyarrow.parquet as pq

    meta = li.root / "meta"
    episode_files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
    if not episode_files:
        raise ConvertError(f"{meta / 'episodes'} has no chunk-*/file-*.parquet; the v3.0 metadata is incomplete")
    rows = [r for f in episode_files for r in pq.read_table(f).to_pylist()]
    out = []
    for row in sorted(rows, key=lambda r: r["episode_index"]):
        ep = int(row["episode_index"])
        data = li.root / li.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                     file_index=row["data/file_index"])
        videos = {}
        for k in li.cameras:
            if k in li.image_keys:
                continue
            vpath = li.root / li.info["video_path"].format(video_key=k, chunk_index=row[f"videos/{k}/chunk_index"],
                                                           file_index=row[f"videos/{k}/file_index"])
            videos[k] = (vpath, float(row[f"videos/{k}/from_timestamp"]))
        span = (int(row["dataset_from_index"]), int(row["dataset_to_index"]))
        task = row["tasks"][0]

        def load(data=data, videos=videos, span=span, task=task, ep=ep):
            import pyarrow.compute as pc

            table = pq.read_table(data)
            table = table.filter(pc.equal(table.column("episode_index"), ep))
            if table.num_rows != span[1] - span[0]:
                raise ConvertError(f"{data} holds {table.num_rows} rows of episode {ep}; its metadata says "
                                   f"{span[1] - span[0]}")
            return _lerobot_episode(li, table, task, videos, f"{data.name}#episode_{ep}")

        out.append(SourceEpisode(ep, f"episode_{ep}", (data, *(p for p, _ in videos.values())), load))
    return out


def read_lerobot(src: pathlib.Path, instruction: str | None = None,
                 drop_cameras: Sequence[str] = ()) -> list[SourceEpisode]:
    """Episodes of a LeRobot v2.1 or v3.0 folder (parquet + mp4, AV1 decoded by PyAV)."""
    li = _lerobot_info(src, drop_cameras)
    return _v21_episodes(li) if li.version == "v2.1" else _v30_episodes(li)


READERS: dict[str, Callable[..., list[SourceEpisode]]] = {
    "folder": read_folder,
    "robomimic": read_robomimic,
    "lerobot": read_lerobot,
}


def default_name(src: pathlib.Path) -> str:
    """The dataset name derived from the source's file or folder name."""
    stem = src.stem if src.is_file() else src.name
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return name if name[:1].isalpha() else f"demos_{name}"


def _resized(ep: Episode, size: tuple[int, int] | None) -> Episode:
    import cv2

    if size is None:
        return ep
    h, w = size
    images = {r: np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in v]) for r, v in ep.images.items()}
    return dataclasses.replace(ep, images=images)


def convert(src: str | pathlib.Path, out: str | pathlib.Path, fmt: str, *, name: str | None = None,
            episodes: Sequence[int] | None = None, instruction: str | None = None,
            drop_cameras: Sequence[str] = (), filter_key: str | None = None,
            image_size: tuple[int, int] | None = None, version: str = "1.0.0", progress: bool = True) -> pathlib.Path:
    """Convert the demo set `src` into `<out>/<name>/<version>/`; nothing is left behind on failure.

    `image_size` (height, width) resizes every frame; None keeps the source resolution. `drop_cameras`
    (LeRobot) leaves cameras out; `filter_key` (robomimic) converts only the demos of mask/<filter_key>."""
    from tqdm import tqdm

    src = pathlib.Path(src)
    if not src.exists():
        raise ConvertError(f"source {src} does not exist")
    if fmt not in READERS:
        near = difflib.get_close_matches(fmt, READERS, n=1)
        raise ConvertError(f"format {fmt!r} is not one of {sorted(READERS)}" + (f"; did you mean {near[0]!r}?" if near else ""))
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ConvertError(f"image_size {image_size} must be (height, width) with positive sides")
    if drop_cameras and fmt != "lerobot":
        raise ConvertError("drop_cameras applies to LeRobot sets only")
    if filter_key is not None and fmt != "robomimic":
        raise ConvertError("filter_key applies to robomimic files only")
    extra = {"lerobot": {"drop_cameras": drop_cameras}, "robomimic": {"filter_key": filter_key}}.get(fmt, {})
    listed = READERS[fmt](src, instruction, **extra)
    by_index = {e.index: e for e in listed}
    if episodes is not None:
        if not episodes:
            raise ConvertError("--episodes is empty; give indices like 0,3,7")
        missing = [i for i in episodes if i not in by_index]
        if missing:
            raise ConvertError(f"episodes {missing} are not in {src}; it lists {len(listed)} episodes with indices "
                               f"{min(by_index)}..{max(by_index)}")
        selected = [by_index[i] for i in episodes]
    else:
        selected = listed
    for ep in selected:
        for f in ep.files:
            if not f.is_file():
                present = [e.index for e in listed if all(p.is_file() for p in e.files)]
                raise ConvertError(
                    f"{f} is missing (needed by episode {ep.index}, {ep.label}); the set's metadata lists it but the "
                    f"file is absent. Convert only complete episodes with --episodes "
                    f"{','.join(map(str, present[:20]))}{'...' if len(present) > 20 else ''}"
                    + (" or leave a camera out with --drop-camera KEY" if fmt == "lerobot" else ""))
    name = name or default_name(src)

    def load_all():
        for ep in tqdm(selected, desc=f"convert {name}", unit="episode", disable=not progress):
            try:
                yield _resized(ep.load(), image_size)
            except DataError:
                raise
            except (OSError, ValueError, KeyError) as e:
                raise ConvertError(f"episode {ep.index} ({ep.label}) of {src} cannot be read: "
                                   f"{type(e).__name__}: {e}") from e

    path = write_rlds(out, name, load_all(), version=version,
                      description=f"converted from {src} ({fmt}) by vla data convert")
    logger.info("converted %d episodes of %s to %s", len(selected), src, path)
    return path


def parse_episodes(text: str | None) -> list[int] | None:
    """'0,3,7' -> [0, 3, 7]; None -> None (all episodes)."""
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise ConvertError(f"--episodes {text!r} must be comma-separated integers like 0,3,7") from e
