"""Helpers for V-GPS tests that run MuJoCo: in a spawned child process, because MuJoCo's GL renderer and
TensorFlow (loaded by the RLDS tests in the same pytest process) crash when they share a process."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any

import numpy as np

TASK = "widowx-pick-block"
IMAGE_SIZE = 64  # rendered size; the tiny critic resizes to its own 32 px


def in_child(fn, *args: Any) -> Any:
    """fn(*args) in a fresh spawned process (its result comes back pickled: test-only, never a wire format)."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def collect(task: str, variants: list[tuple[str, int]], image_size: int = IMAGE_SIZE) -> list:
    """Run the scene's scripted expert variants on the given seeds (in a child process); return Episodes."""
    return in_child(_collect, task, variants, image_size)


def _collect(task: str, variants: list[tuple[str, int]], image_size: int) -> list:
    import robot
    import sim
    from vla.data.rlds_writer import Episode

    scene = sim.make(task, seed=0, image_size=image_size)
    config = sim.get_task(task)
    episodes = []
    for variant, seed in variants:
        policy = config.expert(scene, variant, seed=seed)
        res = robot.run_episode(scene, policy, config.instruction, max_steps=config.max_steps, seed=seed)
        steps = res.steps
        episodes.append(Episode(
            images={role: np.stack([f[role] for f in res.frames[:steps]]) for role in res.frames[0]},
            state=np.stack(res.proprio[:steps]).astype(np.float32),
            action=np.stack(res.actions).astype(np.float32),
            instruction=config.instruction, success=bool(res.success),
            metadata={"variant": variant, "seed": seed}))
    scene.close()
    return episodes


class ExpertSampler:
    """A sampling policy for guidance tests: K Gaussian samples (std `noise` x temperature, in metres)
    around the scripted expert's next action; the expert is asked once per control step."""

    def __init__(self, expert, noise: float, seed: int) -> None:
        self.expert, self.noise = expert, noise
        self.rng = np.random.default_rng(seed)

    def predict_actions(self, images, instructions, unnorm_key=None, *, n_samples=1, temperature=1.0):
        mean = self.expert.act(None, instructions[0])
        out = np.repeat(mean[None], n_samples, axis=0)
        out[:, :3] += self.rng.normal(0.0, self.noise * temperature, (n_samples, 3))
        return out


def guided_episode(q_dir: str, k: int, seed: int) -> dict:
    """One MuJoCo episode of ValueGuidedPolicy(ExpertSampler, Q from q_dir); what happened, per step."""
    import robot
    import sim
    from vla.vgps import QFunction, ValueGuidedPolicy

    scene = sim.make(TASK, seed=seed, image_size=IMAGE_SIZE)
    config = sim.get_task(TASK)
    sampler = ExpertSampler(config.expert(scene, "expert", seed=seed), noise=0.01, seed=seed)
    policy = ValueGuidedPolicy(sampler, QFunction.from_pretrained(q_dir), k=k, beta=0.0)
    chosen: list[tuple] = []
    act = policy.act

    def recording_act(obs, instruction):  # keeps what each step chose, to check it against Q afterwards
        out = act(obs, instruction)
        chosen.append((obs.images["primary"], out.candidates, out.values, out.index))
        return out

    policy.act = recording_act
    res = robot.run_episode(scene, policy, config.instruction, max_steps=config.max_steps, seed=seed)
    scene.close()
    return {"success": res.success, "steps": res.steps, "reason": res.reason, "chosen": chosen,
            "actions": np.stack(res.actions), "instruction": config.instruction}
