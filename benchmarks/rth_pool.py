"""Pool `rth_interventions.py` runs from several seeds: each arm's success and its paired gain over RT-H.

    .venv/bin/python benchmarks/rth_pool.py benchmarks/results/rth.json benchmarks/results/rth_seed1.json

Each run trained its own policies on its own demos and evaluated its own seeds; pooled here, an
episode is paired only with the same run's RT-H episode. The interval resamples episodes, so it
does not hold the spread between training seeds: read the per-run lines next to it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sim.evaluate import paired_bootstrap  # noqa: E402

BASELINE = "rth"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=pathlib.Path, help="rth.json files, one per seed")
    p.add_argument("--out", type=pathlib.Path, help="also write the pooled figures here (JSON)")
    args = p.parse_args()
    runs = [json.loads(path.read_text()) for path in args.runs]
    missing = [str(path) for path, r in zip(args.runs, runs) if "outcomes" not in r]
    if missing:
        raise SystemExit(f"{missing} carry no per-episode outcomes; rerun them with the current rth_interventions.py")
    arms = [a for a in runs[0]["outcomes"] if all(a in r["outcomes"] for r in runs)]
    pooled = {a: np.concatenate([r["outcomes"][a] for r in runs]) for a in arms}
    result = {"runs": [str(p) for p in args.runs], "episodes_per_arm": len(pooled[BASELINE]),
              "success": {a: float(pooled[a].mean()) for a in arms},
              "success_per_run": {a: [r["success"][a] for r in runs] for a in arms},
              "gain": {a: float(pooled[a].mean() - pooled[BASELINE].mean()) for a in arms if a != BASELINE},
              "gain_ci": {a: paired_bootstrap(pooled[a], pooled[BASELINE]) for a in arms if a != BASELINE},
              "action_l1_gt_over_flat": [r["action_l1"]["rth_gt"] / r["action_l1"]["flat"] for r in runs]}
    for a in arms:
        line = f"{a:26s} {result['success'][a]:.3f}  (runs: {', '.join(f'{s:.2f}' for s in result['success_per_run'][a])})"
        if a != BASELINE:
            lo, hi = result["gain_ci"][a]
            line += f"  gain over rth {result['gain'][a]:+.3f}, episode-bootstrap 95% CI {lo:+.2f}..{hi:+.2f}"
        print(line)
    print("action L1 with ground-truth motions / flat, per run: "
          + ", ".join(f"{x:.2f}x" for x in result["action_l1_gt_over_flat"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
