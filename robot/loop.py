"""The client-side control loop: observe, ask the policy, filter, act; at a fixed rate if asked.

A policy that raises, times out, or returns a malformed action ends the episode with a reason;
no further action is sent, so the robot holds where it is (a safe stop).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot.errors import PolicyOutputError, RobotError, UnsafeActionError
from robot.protocols import Policy, Robot
from robot.rigs import Rig, apply_rig, resolve_rig
from robot.safety import SafetyFilter, check_action
from robot.types import Observation

log = logging.getLogger(__name__)

# why an episode ended
SUCCESS = "success"
MAX_STEPS = "max_steps"
DONE = "done"  # the robot reported the episode over without success
POLICY_TIMEOUT = "policy_timeout"
POLICY_ERROR = "policy_error"
UNSAFE_ACTION = "unsafe_action"


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """One episode: outcome, per-step timing, and what was seen and done (for videos and datasets)."""

    success: bool
    steps: int  # actions sent to the robot
    reason: str  # one of SUCCESS, MAX_STEPS, DONE, POLICY_TIMEOUT, POLICY_ERROR, UNSAFE_ACTION
    error: str | None  # the policy's error message when reason is POLICY_* or UNSAFE_ACTION
    policy_latency_s: tuple[float, ...]  # one per policy call
    act_latency_s: tuple[float, ...]  # one per Robot.act call
    overruns: int  # steps that took longer than 1 / rate_hz
    safety_clamps: int  # actions changed by the safety filter
    wall_s: float
    frames: tuple[dict[str, np.ndarray], ...]  # role -> image, one per observation (steps + 1)
    proprio: tuple[np.ndarray, ...]  # one per observation (steps + 1)
    actions: tuple[np.ndarray, ...]  # actions sent, after the safety filter (steps)
    rewards: tuple[float, ...]


def action_of(output: Any, dim: int) -> np.ndarray:
    """The action inside a policy's output (an array, or an object with `.action`), checked."""
    raw = getattr(output, "action", output)
    try:
        return check_action(raw, dim)
    except (TypeError, ValueError) as e:
        raise PolicyOutputError(f"policy returned {type(output).__name__} that is not an action: {e}") from e


class _Deadline:
    """Runs one policy call in a daemon thread so that a hung policy cannot hang the robot."""

    def __init__(self, policy: Policy, timeout_s: float) -> None:
        self.policy, self.timeout_s = policy, timeout_s

    def __call__(self, obs: Observation, instruction: str) -> Any:
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["out"] = self.policy.act(obs, instruction)
            except BaseException as e:  # handed to the caller's thread below
                box["err"] = e

        thread = threading.Thread(target=work, daemon=True, name="policy-call")
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"policy did not answer within {self.timeout_s} s")
        if "err" in box:
            raise box["err"]
        return box["out"]


def default_rig(robot: Robot) -> Rig:
    """Every camera of the robot under the role its spec declares."""
    return resolve_rig({c.role: c.name for c in robot.spec.cameras}, robot.spec)


def run_episode(
    robot: Robot,
    policy: Policy,
    instruction: str,
    max_steps: int,
    rate_hz: float | None = None,
    rig: str | Rig | Mapping[str, str] | None = None,
    safety: SafetyFilter | None = None,
    *,
    seed: int | None = None,
    policy_timeout_s: float | None = None,
    stop_on_success: bool = True,
    record_frames: bool = True,
) -> EpisodeResult:
    """Reset `robot` with `seed`, then run `policy` for up to `max_steps` actions.

    `rig` picks which cameras the policy sees, keyed by role (default: every camera by its
    declared role). `rate_hz` paces the loop (default: as fast as it goes, right for sim).
    """
    if max_steps < 1:
        raise RobotError(f"max_steps must be >= 1, got {max_steps}")
    if rate_hz is not None and rate_hz <= 0:
        raise RobotError(f"rate_hz must be > 0 (or None for no pacing), got {rate_hz}")
    resolved = default_rig(robot) if rig is None else resolve_rig(rig, robot.spec)
    call = policy.act if policy_timeout_s is None else _Deadline(policy, policy_timeout_s)
    period = None if rate_hz is None else 1.0 / rate_hz
    dim = robot.spec.action_dim
    start = time.perf_counter()
    obs = robot.reset(seed=seed)
    frames, proprio, actions, rewards = [], [], [], []
    policy_lat, act_lat = [], []
    overruns = clamps = 0
    success, reason, error = False, MAX_STEPS, None
    last_success = False
    next_tick = time.perf_counter()
    while True:
        role_obs = apply_rig(obs, resolved)
        if record_frames:
            frames.append(role_obs.images)
        proprio.append(obs.proprio)
        if len(actions) >= max_steps:
            break
        t0 = time.perf_counter()
        try:
            output = call(role_obs, instruction)
        except TimeoutError as e:
            reason, error = POLICY_TIMEOUT, str(e)
            break
        except Exception as e:  # any policy failure stops the robot; the reason keeps the message
            reason, error = POLICY_ERROR, f"{type(e).__name__}: {e}"
            break
        finally:
            policy_lat.append(time.perf_counter() - t0)
        try:
            action = action_of(output, dim)
            if safety is not None:
                action, report = safety(action, obs.proprio)
                clamps += report.clamped
        except (UnsafeActionError, PolicyOutputError) as e:
            reason, error = UNSAFE_ACTION, str(e)
            break
        t1 = time.perf_counter()
        result = robot.act(action)
        act_lat.append(time.perf_counter() - t1)
        actions.append(action)
        rewards.append(float(result.reward))
        obs = result.observation
        last_success = bool(result.success)
        if result.success and stop_on_success:
            success, reason = True, SUCCESS
        elif result.done:
            success, reason = bool(result.success), SUCCESS if result.success else DONE
        if reason in (SUCCESS, DONE):
            role_obs = apply_rig(obs, resolved)
            if record_frames:
                frames.append(role_obs.images)
            proprio.append(obs.proprio)
            break
        if period is not None:
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                overruns += 1
                next_tick = time.perf_counter()  # do not sprint to catch up
    if reason == MAX_STEPS:
        success = last_success  # with stop_on_success=False the verdict is the final state's
    if error is not None:
        log.warning("episode stopped safely after %d steps: %s (%s)", len(actions), reason, error)
    return EpisodeResult(
        success=success,
        steps=len(actions),
        reason=reason,
        error=error,
        policy_latency_s=tuple(policy_lat),
        act_latency_s=tuple(act_lat),
        overruns=overruns,
        safety_clamps=clamps,
        wall_s=time.perf_counter() - start,
        frames=tuple(frames),
        proprio=tuple(proprio),
        actions=tuple(actions),
        rewards=tuple(rewards),
    )
