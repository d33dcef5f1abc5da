"""Where a rig's policy loses the block: in its vision features, or between them and its actions.

Reads the policies `eye_in_hand_ood.py` trained for the block-pick task and measures, per rig:

1. probe: block position (x, y on the table) decoded linearly (ridge, flattened patch tokens) from
   the fused vision backbone's output and from the projector's output, per camera; fit on the first
   75% of reset frames, scored on the rest (R^2 and median error in cm);
2. action: correlation of the policy's x, y, z action with the scripted expert's on the same
   observations, at the first step and after --later steps of the expert;
3. grasp: closed-loop episodes on the demos' own seeds (the policy saw these scenes in training)
   and on the evaluation seeds; the table-plane distance between fingertips and block when the
   policy first closes the gripper, next to the blind reference: the block's median distance to
   its mean position, what a policy that ignores the image would leave.

A probe near the expert's precision with a weak action correlation says the information reaches
the language model, which does not use it. Writes --out (JSON) and prints one line per figure.

    .venv/bin/python benchmarks/eye_in_hand_probe.py --policies /tmp/eih/policies/pick_task \\
        --out benchmarks/results/eye_in_hand_probe.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from robot import run_episode  # noqa: E402
from robot.rigs import apply_rig, resolve_rig  # noqa: E402
from sim.collect import dataset_name  # noqa: E402
from sim.config import SceneOptions  # noqa: E402
from sim.evaluate import EVAL_SEED, CheckpointPolicy  # noqa: E402
from sim.registry import get_task  # noqa: E402
from vla.model.openvla import OpenVLA  # noqa: E402

TASK = "widowx-pick-block"
RIGS = ("third_person", "eye_in_hand", "both", "both-vib")
CAMERAS = {"primary": "shoulder", "wrist": "wrist"}  # role -> camera of the benchmark's two-camera scene
RENDER_SIZE = 112  # as eye_in_hand_ood.py
FIT_FRACTION = 0.75
RIDGE = (1.0, 10.0, 100.0, 1e3, 1e4)  # the best on the held-out frames is reported (an upper bound)


def reset_frames(scene, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Both cameras' first frames and the block's table position for seeds 0..n-1."""
    images: dict[str, list] = {cam: [] for cam in CAMERAS.values()}
    xy = []
    for seed in range(n):
        obs = scene.reset(seed=seed)
        for cam in images:
            images[cam].append(obs.images[cam])
        xy.append(scene.block_pos[:2])
    return {cam: np.stack(v) for cam, v in images.items()}, np.stack(xy)


def ridge_probe(features: np.ndarray, target: np.ndarray) -> dict:
    """Held-out R^2 and median error (cm) of the best ridge fit of `target` on `features`."""
    cut = int(FIT_FRACTION * len(target))
    mu, sd = features[:cut].mean(0), features[:cut].std(0) + 1e-6
    x_fit, x_test = (features[:cut] - mu) / sd, (features[cut:] - mu) / sd
    y_mean = target[:cut].mean(0)
    best = None
    for lam in RIDGE:
        w = np.linalg.solve(x_fit.T @ x_fit + lam * np.eye(x_fit.shape[1]), x_fit.T @ (target[:cut] - y_mean))
        pred = x_test @ w + y_mean
        r2 = 1 - ((pred - target[cut:]) ** 2).sum() / ((target[cut:] - target[cut:].mean(0)) ** 2).sum()
        if best is None or r2 > best["r2"]:
            best = {"r2": float(r2), "median_error_cm": float(np.median(np.linalg.norm(pred - target[cut:], axis=1)) * 100),
                    "ridge": lam}
    return best


@torch.no_grad()
def probe(model: OpenVLA, images: np.ndarray, xy: np.ndarray) -> dict:
    """Linear probes of the block position on one camera's frames through the model's shared backbone."""
    feats, proj = [], []
    for start in range(0, len(images), 50):
        pv = model.processor.process_images(list(images[start:start + 50]))
        f = model.vision_backbone(pv)
        feats.append(f.flatten(1).numpy())
        proj.append(model.projector(f).flatten(1).numpy())
    return {"vision": ridge_probe(np.concatenate(feats), xy), "projector": ridge_probe(np.concatenate(proj), xy)}


def action_correlation(scene, task, rig, policy: CheckpointPolicy, seeds: int, later: int) -> dict:
    """Per-axis correlation (x, y, z) of policy and expert actions at step 0 and at step `later`."""
    out = {}
    for at in (0, later):
        expert_xyz, policy_xyz = [], []
        for seed in range(seeds):
            obs = scene.reset(seed=seed)
            expert = task.expert(scene, seed=seed)
            for _ in range(at):
                obs = scene.act(np.asarray(expert.act(obs, task.instruction))).observation
            expert_xyz.append(np.asarray(expert.act(obs, task.instruction))[:3])
            policy_xyz.append(np.asarray(policy.act(apply_rig(obs, rig), task.instruction))[:3])
        e, p = np.stack(expert_xyz), np.stack(policy_xyz)
        out[f"step_{at}"] = [float(np.corrcoef(e[:, j], p[:, j])[0, 1]) for j in range(3)]
    return out


class _Watch:
    """Passes the policy's actions through; notes the fingertip-block distance at the first close."""

    def __init__(self, policy: CheckpointPolicy, scene) -> None:
        self.policy, self.scene, self.at_close = policy, scene, None

    def act(self, obs, instruction):
        action = np.asarray(self.policy.act(obs, instruction))
        if self.at_close is None and action[6] < 0.5:
            self.at_close = float(np.linalg.norm(self.scene.ee_pos[:2] - self.scene.block_pos[:2]))
        return action


def grasp(scene, task, policy: CheckpointPolicy, first_seed: int, episodes: int) -> dict:
    """Success and median fingertip-block distance (cm) at the first close, over `episodes` seeds."""
    wins, dists = 0, []
    for i in range(episodes):
        watch = _Watch(policy, scene)
        res = run_episode(scene, watch, task.instruction, task.max_steps, rig="both", seed=first_seed + i,
                          record_frames=False)
        wins += int(res.success)
        if watch.at_close is not None:
            dists.append(watch.at_close)
    return {"success_rate": wins / episodes, "episodes": episodes, "closed": len(dists),
            "median_xy_error_at_close_cm": float(np.median(dists) * 100) if dists else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policies", type=pathlib.Path, required=True,
                   help="eye_in_hand_ood.py's OUT/policies/pick_task (one folder per rig)")
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--frames", type=int, default=800, help="reset frames for the probes")
    p.add_argument("--seeds", type=int, default=60, help="observations for the action correlation")
    p.add_argument("--later", type=int, default=4, help="expert steps before the second correlation")
    p.add_argument("--episodes", type=int, default=15, help="closed-loop episodes on train and on eval seeds")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rigs = [r for r in RIGS if (args.policies / r / "config.json").is_file()]
    if not rigs:
        raise SystemExit(f"no rig folders ({', '.join(RIGS)}) with a config.json under {args.policies}; "
                         "pass eye_in_hand_ood.py's OUT/policies/pick_task")
    task = get_task(TASK)
    scene = task.make(seed=0, options=SceneOptions(rig="both", image_size=RENDER_SIZE))
    rig = resolve_rig("both", scene.spec)
    images, xy = reset_frames(scene, args.frames)
    # what a policy that ignores the image would score: the block's median distance to its mean position
    blind_cm = float(np.median(np.linalg.norm(xy - xy.mean(0), axis=1)) * 100)
    print(f"blind reference (block to its mean position): {blind_cm:.1f} cm", flush=True)
    result: dict = {"policies": str(args.policies), "config": {k: str(v) for k, v in vars(args).items()},
                    "blind_reference_cm": blind_cm, "rigs": {}}
    for name in rigs:
        model = OpenVLA.from_pretrained(args.policies / name).eval()
        policy = CheckpointPolicy(model, unnorm_key=dataset_name(TASK))
        cells = {"probe": {cam: probe(model, images[cam], xy) for cam in CAMERAS.values()},
                 "action_correlation_xyz": action_correlation(scene, task, rig, policy, args.seeds, args.later),
                 "grasp": {"train_seeds": grasp(scene, task, policy, 0, args.episodes),
                           "eval_seeds": grasp(scene, task, policy, EVAL_SEED, args.episodes)}}
        result["rigs"][name] = cells
        for cam, pr in cells["probe"].items():
            print(f"{name:13s} probe {cam:8s}: vision R2 {pr['vision']['r2']:.3f} "
                  f"({pr['vision']['median_error_cm']:.1f} cm), projector R2 {pr['projector']['r2']:.3f} "
                  f"({pr['projector']['median_error_cm']:.1f} cm)", flush=True)
        corr = cells["action_correlation_xyz"]
        print(f"{name:13s} action corr with expert x,y,z: step 0 {np.round(corr['step_0'], 2).tolist()}, "
              f"step {args.later} {np.round(corr[f'step_{args.later}'], 2).tolist()}", flush=True)
        for where, g in cells["grasp"].items():
            err = g["median_xy_error_at_close_cm"]
            print(f"{name:13s} {where}: success {g['success_rate']:.2f}, xy error at first close "
                  f"{'-' if err is None else f'{err:.1f}'} cm ({g['closed']}/{g['episodes']} closed)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
