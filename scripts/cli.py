"""`vla <verb> ...`: dispatches to one module per verb, imported lazily.

Lazy imports keep `vla serve --noop` or `vla robot check` from paying for torch or tensorflow
when they do not need them.
"""
from __future__ import annotations

import difflib
import importlib
import sys

# verb -> (module with a `main(argv)` function, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "info": ("scripts.info", "show presets, versions and what this machine supports"),
    "predict": ("scripts.predict", "predict one action from a checkpoint, an image and an instruction"),
    "data": ("scripts.data", "RLDS datasets: stats, inspect, convert"),
    "finetune": ("scripts.finetune", "fine-tune a policy (LoRA, QLoRA, full)"),
    "serve": ("scripts.serve", "serve a checkpoint over ZeroMQ"),
    "keys": ("scripts.keys", "generate CURVE key pairs for `vla serve --keys`"),
    "sim": ("scripts.sim", "MuJoCo scenes: list, collect, eval"),
    "robot": ("scripts.robot", "real robots: run, check"),
    "demo": ("scripts.demo", "collect, fine-tune, serve and evaluate end to end"),
    "vgps": ("scripts.vgps", "V-GPS value functions: train, score"),
    "rth": ("scripts.rth", "RT-H language motions: label, train, learn-corrections"),
}


def _usage() -> str:
    lines = ["usage: vla <verb> [--help] ...", "", "verbs:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        near = difflib.get_close_matches(verb, VERBS, n=1)
        hint = f" did you mean {near[0]!r}?" if near else ""
        print(f"vla: unknown verb {verb!r};{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = VERBS[verb][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"vla: verb {verb!r} is not available in this build yet", file=sys.stderr)
            return 2
        raise
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
