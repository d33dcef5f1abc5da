"""`vla data stats|inspect|convert`: RLDS datasets from the command line."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Annotated, Literal

import tyro

from scripts.subcommands import run_subcommands
from vla.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class Stats:
    """Print (and optionally write) a dataset's statistics JSON in the checkpoint norm_stats format."""

    name: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="NAME")]  # dataset name (registry entry or a converted set)
    data_dir: pathlib.Path  # folder holding <name>/<version>/dataset_info.json
    out: pathlib.Path | None = None  # also write the JSON here

    def run(self) -> None:
        from vla.data.inspect import statistics_json

        print(statistics_json(self.name, self.data_dir, self.out))


@dataclasses.dataclass(frozen=True)
class Inspect:
    """Print the schema and episode count; write a contact sheet PNG of standardized frames."""

    name: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="NAME")]  # dataset name
    data_dir: pathlib.Path  # folder holding <name>/<version>/
    out: pathlib.Path | None = None  # contact sheet path (default: ./<name>_contact_sheet.png)
    frames: int = 6  # frames on the sheet

    def run(self) -> None:
        from vla.data.inspect import inspect_dataset

        print(inspect_dataset(self.name, self.data_dir, self.out, self.frames))


@dataclasses.dataclass(frozen=True)
class Convert:
    """Convert a demo set (folder | robomimic | lerobot) into RLDS shards under OUT/NAME/<version>/."""

    src: Annotated[tyro.conf.Positional[pathlib.Path], tyro.conf.arg(metavar="SRC")]  # demo folder, robomimic .hdf5, or LeRobot root
    out: Annotated[tyro.conf.Positional[pathlib.Path], tyro.conf.arg(metavar="OUT")]  # output data_dir
    format: Literal["folder", "robomimic", "lerobot"]  # source format
    name: str | None = None  # dataset name (default: the source's name)
    episodes: str | None = None  # comma-separated episode indices, e.g. 0,3,7 (default: all)
    instruction: str | None = None  # instruction where the source has none
    drop_camera: tuple[str, ...] = ()  # LeRobot camera keys to leave out (e.g. one whose videos are missing)
    filter: str | None = None  # robomimic: convert only the demos listed in mask/<filter>
    image_size: tuple[int, int] | None = None  # resize frames to HEIGHT WIDTH (default: keep)

    def run(self) -> None:
        from vla.data.convert import convert, parse_episodes

        path = convert(self.src, self.out, self.format, name=self.name, episodes=parse_episodes(self.episodes),
                       instruction=self.instruction, drop_cameras=self.drop_camera, filter_key=self.filter,
                       image_size=self.image_size)
        print(f"wrote {path}")


def main(argv: list[str]) -> int:
    return run_subcommands("vla data", {"stats": Stats, "inspect": Inspect, "convert": Convert}, (DataError,), argv)
