"""Motion interventions: a person (or an oracle) types a motion that goes straight into the action query.

`RTHPolicy` is a `robot.Policy` over an RT-H model (in process) or an RT-H server (a
`PolicyClient`-like object whose `act` takes `options={"motion": ...}`). Each step it asks the
intervener whether to override the predicted motion, and keeps what it did per step
(`motion`, `motion_source`) so the episode can be written as RLDS for `learn_corrections`.
"""
from __future__ import annotations

import dataclasses
import logging
import select
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO

import numpy as np

from vla.rth.motions import STOP, MotionSpec, check_motion, label_motions, motion_axes
from vla.rth.train import CHECKPOINT_FIELD, OVERRIDE, POLICY, SOURCE_FIELD

logger = logging.getLogger(__name__)


class Intervener(Protocol):
    """Decides, each step, whether to replace the policy's motion."""

    def correct(self, obs: Any, instruction: str, predicted_motion: str) -> str | None:
        """The motion to use instead, or None to keep the prediction."""
        ...

    def reset(self) -> None:
        """Forget per-episode state."""
        ...


@dataclasses.dataclass(frozen=True)
class StepOutput:
    """What `RTHPolicy.act` returns: the action, the motion it followed, and whose motion that was."""

    action: np.ndarray
    motion: str
    motion_source: str  # "policy" | "override"


class RTHPolicy:
    """A `robot.Policy`: motion query (or an intervention), then the action query."""

    def __init__(self, model: Any = None, *, client: Any = None, intervener: Intervener | None = None,
                 unnorm_key: str | None = None, camera: str = "primary") -> None:
        if (model is None) == (client is None):
            raise ValueError("give exactly one of model= (in process) or client= (an RT-H server)")
        self.model, self.client, self.intervener = model, client, intervener
        self.unnorm_key, self.camera = unnorm_key, camera
        self.motions: list[str] = []
        self.sources: list[str] = []

    def reset(self) -> None:
        """Start a new episode's record."""
        self.motions, self.sources = [], []
        if self.intervener is not None:
            self.intervener.reset()

    def _predict(self, obs: Any, instruction: str, motion: str | None) -> tuple[np.ndarray, str]:
        if self.client is not None:
            reply = self.client.act(obs, instruction, unnorm_key=self.unnorm_key,
                                    options={"motion": motion} if motion is not None else None)
            return np.asarray(reply.action), reply.motion
        from vla.rth.query import predict_action

        return predict_action(self.model, obs.images[self.camera], instruction, motion, self.unnorm_key)

    def act(self, obs: Any, instruction: str) -> StepOutput:
        """One step; the override (if any) replaces the motion and the action query is re-run with it."""
        action, motion = self._predict(obs, instruction, None)
        source = POLICY
        override = self.intervener.correct(obs, instruction, motion) if self.intervener is not None else None
        if override is not None and override.strip().lower() != motion.strip().lower():
            action, motion = self._predict(obs, instruction, check_motion(override))
            source = OVERRIDE
        self.motions.append(motion)
        self.sources.append(source)
        return StepOutput(np.asarray(action, np.float32), motion, source)

    def extras(self, steps: int) -> dict[str, list[str]]:
        """The per-step record of the last `steps` actions, for `Episode.extras`."""
        if steps > len(self.motions):
            raise ValueError(f"asked for {steps} steps of record, the policy acted {len(self.motions)} times")
        from vla.rth.label import MOTION_FIELD

        return {MOTION_FIELD: self.motions[:steps], SOURCE_FIELD: self.sources[:steps]}


class OracleIntervener:
    """Labels the scripted expert's next action as a motion; overrides after `patience` disagreeing steps.

    `expert(obs, instruction)` returns the expert's action (any `robot.Policy.act`). Motions are
    compared per axis (`motion_axes`), so word order does not count as a disagreement.
    """

    def __init__(self, expert: Callable[[Any, str], Any], spec: MotionSpec, patience: int = 2) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.expert, self.spec, self.patience = expert, dataclasses.replace(spec, window=1), patience
        self.reset()

    def reset(self) -> None:
        """New episode: no previous gripper, no disagreement streak."""
        self._previous: np.ndarray | None = None
        self._streak = 0
        self.interventions = 0

    def expert_motion(self, obs: Any, instruction: str) -> str:
        """The motion of the expert's next action (its gripper change counted from its previous action)."""
        out = self.expert(obs, instruction)
        a = np.asarray(getattr(out, "action", out), np.float64)
        prev = a if self._previous is None else self._previous
        self._previous = a
        return label_motions(np.stack([prev, a]), self.spec)[1]

    def correct(self, obs: Any, instruction: str, predicted_motion: str) -> str | None:
        """The expert's motion once the policy has disagreed with it `patience` steps in a row."""
        want = self.expert_motion(obs, instruction)
        agree = motion_axes(predicted_motion, self.spec.words) == motion_axes(want, self.spec.words)
        self._streak = 0 if agree else self._streak + 1
        if self._streak >= self.patience:
            self.interventions += 1
            return want
        return None


# hotkey -> motion, for a person at a terminal (one key then Enter; or a typed motion then Enter)
HOTKEYS: Mapping[str, str] = {
    "w": "move arm forward", "s": "move arm backward", "a": "move arm left", "d": "move arm right",
    "r": "move arm up", "f": "move arm down", "q": "rotate arm left", "e": "rotate arm right",
    "c": "close gripper", "o": "open gripper", "x": STOP,
}


class KeyboardIntervener:
    """Reads lines typed during the episode without blocking: a hotkey or any motion phrase.

    An empty line clears the override; otherwise the last override holds until changed.
    """

    def __init__(self, stream: TextIO = sys.stdin, hotkeys: Mapping[str, str] = HOTKEYS) -> None:
        self.stream, self.hotkeys = stream, dict(hotkeys)
        self.current: str | None = None

    def reset(self) -> None:
        """A new episode starts without an override."""
        self.current = None

    def _lines(self) -> list[str]:
        lines = []
        while select.select([self.stream], [], [], 0)[0]:
            line = self.stream.readline()
            if not line:  # end of input
                break
            lines.append(line.strip())
        return lines

    def correct(self, obs: Any, instruction: str, predicted_motion: str) -> str | None:
        """The held override (updated by whatever was typed since the last step)."""
        for line in self._lines():
            self.current = None if not line else self.hotkeys.get(line.lower(), line)
            logger.info("intervention: %s", self.current or "cleared; the policy's motions again")
        return self.current


def episode_metadata(policy: RTHPolicy) -> dict[str, str]:
    """Episode metadata naming the RT-H checkpoint that ran it (learn-corrections checks it)."""
    from vla.rth.query import rth_info

    info = rth_info(policy.model) if policy.model is not None else None
    ckpt = info.checkpoint_id if info is not None else str(policy.client.metadata().get("rth", {})
                                                            .get("checkpoint_id", ""))
    return {CHECKPOINT_FIELD: ckpt}


def run_and_record(robot: Any, policy: RTHPolicy, instruction: str, max_steps: int, *, seed: int | None = None,
                   rig: Any = None, **loop_kwargs: Any) -> tuple[Any, Any]:
    """Run one episode with `robot.run_episode`; return (EpisodeResult, RLDS Episode with motion and motion_source)."""
    from robot import run_episode
    from vla.data.rlds_writer import Episode

    policy.reset()
    res = run_episode(robot, policy, instruction, max_steps, rig=rig, seed=seed, **loop_kwargs)
    if res.steps == 0:
        raise ValueError(f"the episode ended before any action ({res.reason}: {res.error}); nothing to record")
    episode = Episode(
        images={role: np.stack([f[role] for f in res.frames[:res.steps]]) for role in res.frames[0]},
        state=np.stack(res.proprio[:res.steps]).astype(np.float32),
        action=np.stack(res.actions).astype(np.float32),
        instruction=instruction,
        success=bool(res.success),
        extras=policy.extras(res.steps),
        metadata={**episode_metadata(policy), **({"seed": int(seed)} if seed is not None else {})})
    return res, episode
