"""One way to run a verb's sub-commands (`vla data stats`, `vla sim eval`, ...) and report its errors."""
from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

import tyro


def run_subcommands(prog: str, commands: Mapping[str, type], errors: tuple[type[BaseException], ...],
                    argv: list[str]) -> int:
    """Parse `argv` into one of `commands` (dataclasses with `run()`) and run it.

    `errors` are the user mistakes the verb's packages raise: printed as one line naming the error
    (its message says what to do), exit code 1. Anything else is a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd = tyro.extras.subcommand_cli_from_dict(dict(commands), args=argv, prog=prog)
    try:
        cmd.run()
    except errors as e:
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
