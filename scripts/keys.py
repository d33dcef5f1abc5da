"""`vla keys DIR [--clients NAME ...]`: CURVE key pairs for `vla serve --keys DIR`."""
from __future__ import annotations

import dataclasses
import pathlib
import sys

import tyro

from serving.errors import ServingError
from serving.keys import generate_keys


@dataclasses.dataclass(frozen=True)
class Keys:
    """Write a server key pair and one pair per client into DIR, authorizing each client."""

    directory: tyro.conf.Positional[pathlib.Path]  # folder to write (server.key*, NAME.key*, authorized/)
    clients: tuple[str, ...] = ("client",)  # one key pair per robot computer
    force: bool = False  # replace existing keys (every client then needs its new files)

    def run(self) -> pathlib.Path:
        return generate_keys(self.directory, self.clients, force=self.force)


def main(argv: list[str]) -> int:
    """Generate the keys and say which file goes where."""
    keys = tyro.cli(Keys, args=argv)
    try:
        out = keys.run()
    except ServingError as e:
        print(f"vla keys: {e}", file=sys.stderr)
        return 2
    print(f"server: run `vla serve ... --keys {out}` (uses server.key_secret and authorized/)")
    for name in keys.clients:
        print(f"client {name}: copy {out / (name + '.key')}, {out / (name + '.key_secret')} and {out / 'server.key'} "
              f"to the robot computer; PolicyClient(address, keys=FOLDER, key_name={name!r})")
    return 0
