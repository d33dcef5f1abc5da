"""`vla serve CHECKPOINT | --noop [--action-dim 7]`: serve a policy over ZeroMQ until Ctrl-C / SIGTERM."""
from __future__ import annotations

import json
import logging
import sys

import tyro

from serving.errors import ServingError
from serving.launch import ServeConfig, serve
from serving.server import PolicyServer


def _announce(server: PolicyServer) -> None:
    # one parseable line with the address first: scripts and tests read it to connect
    print(f"serving on {server.address}", flush=True)
    print(json.dumps(server.metadata(), default=str), flush=True)


def main(argv: list[str]) -> int:
    """Parse the flags of `ServeConfig` and serve."""
    config = tyro.cli(ServeConfig, args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        serve(config, on_ready=_announce)
    except ServingError as e:
        print(f"vla serve: {e}", file=sys.stderr)
        return 2
    return 0
