"""What `vla data stats` and `vla data inspect` report: statistics JSON, schema, a contact sheet."""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from vla.data.registry import Registry
from vla.data.rlds import decode_image, iter_episodes, open_dataset, step_features
from vla.data.statistics import source_statistics

TILE_HEIGHT = 160  # pixels per camera image on the contact sheet
CAPTION_HEIGHT = 36
MIN_WIDTH = 480  # pixels, so two caption lines fit


def statistics_json(name: str, data_dir: str | pathlib.Path, out: str | pathlib.Path | None = None,
                    registry: Registry | None = None) -> str:
    """The statistics of `name` as norm_stats JSON `{name: {...}}`, also written to `out` if given."""
    stats = source_statistics(open_dataset(name, data_dir, registry))
    text = json.dumps({name: stats}, indent=2)
    if out is not None:
        pathlib.Path(out).write_text(text + "\n")
    return text


@dataclasses.dataclass(frozen=True)
class InspectReport:
    """The result of inspecting one dataset."""

    name: str
    path: pathlib.Path
    episodes: int
    schema: str  # raw step features, one per line
    entry: str  # how the entry maps them (images, state, action conventions)
    contact_sheet: pathlib.Path

    def __str__(self) -> str:
        return (f"dataset {self.name} at {self.path}\nepisodes (train): {self.episodes}\n"
                f"step features:\n{self.schema}\nstandardization:\n{self.entry}\n"
                f"contact sheet: {self.contact_sheet}")


def _caption(img: np.ndarray, lines: list[str]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + CAPTION_HEIGHT), "white")
    canvas.paste(Image.fromarray(img), (0, 0))
    draw = ImageDraw.Draw(canvas)
    per_line = max(img.shape[1] // 6, 10)  # the default bitmap font is about 6 px wide
    for k, line in enumerate(lines[:2]):
        draw.text((4, img.shape[0] + 4 + 14 * k), line[:per_line], fill="black")
    return np.asarray(canvas)


def contact_sheet(frames: list[dict], path: pathlib.Path) -> pathlib.Path:
    """Rows of frames: each frame's cameras side by side, its instruction underneath."""
    import cv2
    from PIL import Image

    rows = []
    for f in frames:
        tiles = [cv2.resize(img, (max(1, round(img.shape[1] * TILE_HEIGHT / img.shape[0])), TILE_HEIGHT))
                 for _, img in sorted(f["images"].items())]
        strip = np.concatenate(tiles, 1)
        if strip.shape[1] < MIN_WIDTH:  # room for the caption
            strip = np.pad(strip, ((0, 0), (0, MIN_WIDTH - strip.shape[1]), (0, 0)), constant_values=255)
        ident = str(f["episode_id"]).rstrip("/").rsplit("/", 1)[-1]
        rows.append(_caption(strip, [str(f["instruction"]) or "(no instruction)",
                                     f"{ident} t={f['step']} a={[round(float(v), 3) for v in f['action'][:7]]}"]))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    Image.fromarray(sheet).save(path)
    return path


def inspect_dataset(name: str, data_dir: str | pathlib.Path, out: str | pathlib.Path | None = None,
                    num_frames: int = 6, registry: Registry | None = None) -> InspectReport:
    """Schema, episode count and a contact sheet PNG of a few standardized frames."""
    source = open_dataset(name, data_dir, registry)
    features = step_features(source.builder)
    schema = "\n".join(f"  {k}: {d}{list(s) if s else ''}" for k, (d, s) in sorted(features.items()))
    e = source.entry
    entry = (f"  images: {e.images}\n  state: {[str(r) for r in e.state]} ({e.state_encoding.value})\n"
             f"  action: {e.action.encoding.value}, arm {[str(r) for r in e.action.arm]} as {e.action.layout.value}, "
             f"gripper {e.action.gripper} ({e.action.gripper_convention.value})\n"
             f"  language: {e.language_key} ({e.language_encoding.value})"
             + ("\n  (standardized schema: no registry entry needed)" if source.standardized else ""))
    total = source.num_episodes()
    frames = []
    for ep in iter_episodes(source):
        # a few frames per episode, spread over its length
        for t in sorted({0, len(ep) // 2, len(ep) - 1}):
            frames.append({"images": {r: decode_image(v[t]) for r, v in ep.images.items()}, "episode_id": ep.episode_id,
                           "step": t, "instruction": ep.instructions[t], "action": ep.action[t]})
        if len(frames) >= num_frames:
            break
    path = pathlib.Path(out) if out is not None else pathlib.Path(f"{name}_contact_sheet.png")
    contact_sheet(frames[:num_frames], path)
    return InspectReport(name, source.path, total, schema, entry, path)
