"""`vla info`: presets, package versions, CUDA and bitsandbytes support on this machine."""
from __future__ import annotations

import dataclasses
import json

import tyro


@dataclasses.dataclass(frozen=True)
class Info:
    """Show presets, versions and what this machine supports."""

    json: bool = False  # print machine-readable JSON instead of text

    def run(self) -> dict:
        from vla.model.tools import system_info
        return system_info()


def main(argv: list[str]) -> int:
    """Print the report."""
    cmd = tyro.cli(Info, args=argv)
    info = cmd.run()
    if cmd.json:
        print(json.dumps(info, indent=2))
        return 0
    print("presets:")
    for p in info["presets"]:
        print(f"  {p['name']:<12} {p['parameters'] / 1e6:10.1f} M parameters, {p['dtype']}, "
              f"Llama {p['llm_layers']} x {p['llm_hidden']}")
    print("versions:")
    for pkg, version in info["versions"].items():
        print(f"  {pkg:<13} {version or 'not installed'}")
    cuda = info["cuda"]
    print(f"cuda: {'available: ' + ', '.join(cuda['devices']) if cuda['available'] else 'not available'}")
    print("bitsandbytes:")
    for mode, status in info["quantization"].items():
        print(f"  {mode:<12} {status}")
    return 0
