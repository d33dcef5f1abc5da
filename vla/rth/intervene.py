"""Motion interventions: a person (or an oracle) types a motion that goes straight into the action query.

`RTHPolicy` is a `robot.Policy` over an RT-H model (in process) or an RT-H server (a
`PolicyClient`-like object whose `act` takes `options={"motion": ...}`). Each step it asks the
intervener whether to override the predicted motion, and keeps what it did per step
(`motion`, `motion_source`) so the episode can be written as RLDS for `learn_corrections`.
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import logging
import select
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO

import numpy as np

from vla.rth.errors import MotionQueryError, IntervenerError
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
    """A `robot.Policy`: motion query (or an intervention), then the action query.

    A checkpoint trained with look-ahead L (RT-H: 1) has its motion query answer for the step L
    ahead: step t acts on the motion predicted at step t - L, and the action query for it and the
    next motion query run as one batch (`predict_lookahead`), as RT-H deploys it. Asking the query
    about step t + 1 and acting on the answer at step t put every motion a step early (the tiny
    pick-block policy closed its gripper before reaching the block). Through a server (`client=`)
    the same happens there: each request sends the planned motion and asks for the next one
    (options `planned_motion`, `lookahead`; the server keeps no state between requests).
    """

    def __init__(self, model: Any = None, *, client: Any = None, intervener: Intervener | None = None,
                 unnorm_key: str | None = None, camera: str = "primary") -> None:
        if (model is None) == (client is None):
            raise ValueError("give exactly one of model= (in process) or client= (an RT-H server)")
        self.model, self.client, self.intervener = model, client, intervener
        self.unnorm_key, self.camera = unnorm_key, camera
        self.motions: list[str] = []
        self.sources: list[str] = []
        self.pending: collections.deque[str] = collections.deque()  # motions predicted for the coming steps
        if model is not None:
            from vla.rth.query import require_rth

            self.lookahead = require_rth(model, "an RT-H policy").lookahead
        else:  # a server that does not say (a flat one) gets the plain path, and its reply names what it lacks
            self.lookahead = int(client.metadata().get("rth", {}).get("lookahead", 0))

    def reset(self) -> None:
        """Start a new episode's record."""
        self.motions, self.sources = [], []
        self.pending.clear()
        if self.intervener is not None:
            self.intervener.reset()

    def _act_lookahead(self, obs: Any, instruction: str, key: str | None) -> StepOutput:
        first = None  # a server's reply to an episode's first step, already acted on its own motion
        if not self.pending:  # episode start: the query's first answer stands in for the steps before it
            if self.client is not None:  # one request: motion query on this image, then the batched call
                first = self.client.act(obs, instruction, unnorm_key=key, options={"lookahead": True})
                start = first.motion
            else:
                from vla.rth.query import predict_motions

                start = predict_motions(self.model, [self._images(obs)], [instruction])[0]
            self.pending.extend([start] * self.lookahead)
        predicted = self.pending.popleft()
        override = self._override(obs, instruction, predicted)
        motion = predicted if override is None else override
        if first is not None and override is None:
            action, upcoming = np.asarray(first.action), first.next_motion
        else:  # an override asks again: the action query must follow the typed motion
            action, upcoming = self._act_and_look_ahead(obs, instruction, motion, override is not None, key)
        self.pending.append(upcoming)
        return self._record(action, motion, POLICY if override is None else OVERRIDE)

    def _act_and_look_ahead(self, obs: Any, instruction: str, motion: str, overridden: bool,
                            key: str | None) -> tuple[np.ndarray, str]:
        """(action for `motion`, the motion query's answer for the step ahead), one batched call."""
        if self.client is not None:
            options = {"lookahead": True, ("motion" if overridden else "planned_motion"): motion}
            reply = self.client.act(obs, instruction, unnorm_key=key, options=options)
            return np.asarray(reply.action), reply.next_motion
        from vla.rth.query import predict_lookahead

        actions, upcoming = predict_lookahead(self.model, [self._images(obs)], [instruction], [motion], key)
        return actions[0], upcoming[0]

    def _images(self, obs: Any) -> Any:
        """What the in-process model reads: the `camera` image, or {role: image} for a multi-camera checkpoint."""
        roles = tuple(self.model.config.image_roles)
        if len(roles) == 1:
            return obs.images[self.camera]
        from vla.model.multi_image import images_by_role

        return images_by_role({r: obs.images[r] for r in roles if r in obs.images}, roles)  # names a missing one

    def _override(self, obs: Any, instruction: str, predicted: str) -> str | None:
        """The intervener's motion when it differs from the policy's `predicted` one, else None."""
        override = self.intervener.correct(obs, instruction, predicted) if self.intervener is not None else None
        if override is None or override.strip().lower() == predicted.strip().lower():
            return None
        return check_motion(override)

    def _record(self, action: Any, motion: str, source: str) -> StepOutput:
        self.motions.append(motion)
        self.sources.append(source)
        return StepOutput(np.asarray(action, np.float32), motion, source)

    def _predict(self, obs: Any, instruction: str, motion: str | None, key: str | None) -> tuple[np.ndarray, str]:
        if self.client is not None:
            reply = self.client.act(obs, instruction, unnorm_key=key,
                                    options={"motion": motion} if motion is not None else None)
            return np.asarray(reply.action), reply.motion
        from vla.rth.query import predict_action

        return predict_action(self.model, self._images(obs), instruction, motion, key)

    def act(self, obs: Any, instruction: str, unnorm_key: str | None = None) -> StepOutput:
        """One step; the override (if any) replaces the motion and the action query is re-run with it."""
        key = unnorm_key if unnorm_key is not None else self.unnorm_key
        if self.lookahead > 0:
            return self._act_lookahead(obs, instruction, key)
        action, motion = self._predict(obs, instruction, None, key)
        override = self._override(obs, instruction, motion)
        if override is None:
            return self._record(action, motion, POLICY)
        action, motion = self._predict(obs, instruction, override, key)
        return self._record(action, motion, OVERRIDE)

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

    RULES = ("disagree", "conflict")

    def __init__(self, expert: Callable[[Any, str], Any], spec: MotionSpec, patience: int = 2,
                 rule: str = "disagree") -> None:
        """`rule`: "disagree" overrides when any axis differs; "conflict" only when an axis moves the
        opposite way or the expert's gripper change is missing (as a person corrects a wrong turn,
        not a component too small to matter)."""
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        self.expert, self.spec, self.patience = expert, dataclasses.replace(spec, window=1), patience
        self.rule = rule
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

    def _agree(self, predicted: dict[str, int] | None, want: dict[str, int] | None) -> bool:
        if self.rule == "disagree" or predicted is None or want is None:
            return predicted == want
        opposite = any(predicted[a] * want[a] < 0 for a in want)
        gripper = want["gripper"] != 0 and predicted["gripper"] != want["gripper"]
        return not (opposite or gripper)

    def correct(self, obs: Any, instruction: str, predicted_motion: str) -> str | None:
        """The expert's motion once the policy has disagreed with it `patience` steps in a row."""
        want = self.expert_motion(obs, instruction)
        agree = self._agree(motion_axes(predicted_motion, self.spec.words), motion_axes(want, self.spec.words))
        self._streak = 0 if agree else self._streak + 1
        if self._streak >= self.patience:
            self.interventions += 1
            return want
        return None


# hotkey -> motion, for a person at a terminal. Not q, e or space: `vla robot run` stops the arm on those
HOTKEYS: Mapping[str, str] = {
    "w": "move arm forward", "s": "move arm backward", "a": "move arm left", "d": "move arm right",
    "r": "move arm up", "f": "move arm down", "j": "rotate arm left", "l": "rotate arm right",
    "c": "close gripper", "o": "open gripper", "x": STOP,
}
PHRASE = "/"  # starts a typed motion whose first letter is a hotkey ("/rotate arm left" + Enter)
ERASE = "\x7f\b"  # backspace, as a terminal in cbreak mode sends it


class KeyboardIntervener:
    """A person's motions: a hotkey, or any motion phrase then Enter; an empty line clears the override.

    The last override holds until changed. Keys come from `stream` (whole lines, read without blocking:
    "a" + Enter is a hotkey) or, with `stream=None`, from whoever reads the terminal and calls `feed`
    (the robot runner's key thread; there a hotkey needs no Enter).
    """

    def __init__(self, stream: TextIO | None = sys.stdin, hotkeys: Mapping[str, str] = HOTKEYS) -> None:
        self.stream, self.hotkeys = stream, {k.lower(): v for k, v in hotkeys.items()}
        self.current: str | None = None
        self._typed = ""  # the line being typed into `feed`

    def reset(self) -> None:
        """A new episode starts without an override."""
        self.current = None

    def _lines(self) -> list[str]:
        lines = []
        while self.stream is not None and select.select([self.stream], [], [], 0)[0]:
            line = self.stream.readline()
            if not line:  # end of input
                break
            lines.append(line.strip())
        return lines

    def _apply(self, line: str) -> None:
        text = line.strip().removeprefix(PHRASE).strip()
        self.current = self.hotkeys.get(text.lower(), text) if text else None
        logger.info("intervention: %s", self.current or "cleared; the policy's motions again")

    def feed(self, keys: str) -> None:
        """Keys as a terminal sends them: a hotkey acts at once; other text is a motion ended by Enter;
        Enter on an empty line clears the override."""
        for ch in keys:
            if ch in "\r\n":
                line, self._typed = self._typed, ""
                self._apply(line)
            elif ch in ERASE:
                self._typed = self._typed[:-1]
            elif not self._typed and ch.lower() in self.hotkeys:
                self._apply(ch)
            else:
                self._typed += ch

    def correct(self, obs: Any, instruction: str, predicted_motion: str) -> str | None:
        """The held override (updated by whatever was typed since the last step)."""
        for line in self._lines():
            self._apply(line)
        return self.current


# --intervene NAME of `vla robot run` -> the intervener it builds (the sim's OracleIntervener needs an expert)
INTERVENERS: Mapping[str, Callable[[], KeyboardIntervener]] = {"keyboard": lambda: KeyboardIntervener(stream=None)}


@dataclasses.dataclass(frozen=True)
class RobotIntervention:
    """What `vla robot run --intervene` adds to a run: the RT-H policy, where typed keys go, the episode record."""

    policy: RTHPolicy
    on_keys: Callable[[str], None]  # keys typed at the terminal that are not e-stop keys
    metadata: dict[str, str]  # episode metadata: the checkpoint that ran it

    def record(self, steps: int) -> tuple[dict[str, list[str]], dict[str, str]]:
        """(per-step extras: motion and motion_source, episode metadata) of the first `steps` steps."""
        return self.policy.extras(steps), dict(self.metadata)


def robot_intervention(name: str, client: Any, unnorm_key: str | None, estop_keys: str) -> RobotIntervention:
    """The RT-H policy over a served checkpoint with the named intervener; refuses a flat checkpoint."""
    if name not in INTERVENERS:
        near = difflib.get_close_matches(name, INTERVENERS, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise IntervenerError(f"--intervene {name!r} is not an intervener; {hint}known: {sorted(INTERVENERS)}")
    meta = client.metadata()
    if "rth" not in meta:  # the server's RT-H record; absent for a flat checkpoint
        raise MotionQueryError(f"--intervene {name} needs an RT-H checkpoint, but the server serves "
                               f"{meta.get('name')!r}, which was trained without motion queries; serve a checkpoint "
                               "fine-tuned with `vla finetune --rth` (or `vla rth train`), or drop --intervene")
    intervener = INTERVENERS[name]()
    clash = sorted(set(intervener.hotkeys) & set(estop_keys))
    if clash:
        raise IntervenerError(f"hotkeys {clash} of --intervene {name} are also e-stop keys ({estop_keys!r}); "
                              "pick other e-stop keys")
    policy = RTHPolicy(client=client, intervener=intervener, unnorm_key=unnorm_key)
    return RobotIntervention(policy, intervener.feed, {CHECKPOINT_FIELD: str(meta["rth"]["checkpoint_id"])})


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
