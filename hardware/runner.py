"""`vla robot run`: drive a real arm with a served policy through `robot.run_episode`, safely.

Around the shared control loop this adds what real hardware needs:
- a watchdog thread: if no action reaches the arm within `watchdog_periods` control periods the
  arm holds its position, and the loop's policy deadline (the same span) ends the episode;
- an e-stop: a key press (any of `estop_keys` on the terminal) holds the arm at once from the key
  thread and refuses every later action; Ctrl-C does the same from the main thread;
- a recorder: every (observation, action actually sent) pair, written as an RLDS episode through
  `vla.data.rlds_writer.write_rlds` (the format of sim demos), so real rollouts become training data.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import select
import signal
import sys
import threading
import time
from typing import IO, Any, Protocol

import numpy as np

from hardware.errors import ConfigError, EStopError, HardwareError
from robot.loop import POLICY_TIMEOUT, EpisodeResult, run_episode
from robot.rigs import Rig, apply_rig, resolve_rig
from robot.safety import SafetyFilter
from robot.types import Observation, StepResult

log = logging.getLogger(__name__)

DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*")  # what tfds accepts as a dataset name
ESTOP = "estop"  # reasons this module adds to robot.loop's
WATCHDOG = "watchdog"
ROBOT_ERROR = "robot_error"
WATCHDOG_POLL_S = 0.01
KEY_POLL_S = 0.05
IDLE_WAIT_S = 5.0  # longest wait for an abandoned policy call beyond the client's own timeout
CLIENT_TIMEOUT_FACTOR = 1.5  # the client gives up after the loop's deadline, so the loop reports the timeout


class HoldableRobot(Protocol):
    """A `robot.Robot` that can also stop where it is (both drivers here)."""

    spec: Any
    config: Any  # carries `.safety` (robot.safety.SafetyLimits)

    def reset(self, seed: int | None = None) -> Observation: ...
    def observe(self) -> Observation: ...
    def act(self, action: np.ndarray) -> StepResult: ...
    def hold(self) -> None: ...
    def close(self, park: bool = False) -> None: ...


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """One real-robot episode."""

    instruction: str
    rig: str = "third_person"  # third_person | eye_in_hand | both
    max_steps: int = 100
    unnorm_key: str | None = None  # dataset statistics the server un-normalizes with
    watchdog_periods: float = 2.0  # no action for this many control periods: hold, then stop
    record_dir: pathlib.Path | None = None  # write the episode as RLDS under this folder
    dataset_name: str = "robot_rollouts"  # dataset = <name>_<UTC time>, one per run
    park_at_end: bool = True  # rest the arm after a normal end (never after an e-stop)
    estop_keys: str = " qe"  # keys that stop the arm (space, q, e)
    intervene: str | None = None  # RT-H: who may override the served motion each step ("keyboard")

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.watchdog_periods <= 0:
            raise ConfigError(f"watchdog_periods must be > 0, got {self.watchdog_periods}")
        if not DATASET_NAME.fullmatch(self.dataset_name):
            raise ConfigError(f"dataset_name {self.dataset_name!r} must be lower-case letters, digits and '_', "
                              "starting with a letter (it names an RLDS dataset)")
        if not self.estop_keys:
            raise ConfigError("estop_keys is empty: give at least one key that stops the arm")
        if self.intervene is not None and self.record_dir is None:
            raise ConfigError(f"--intervene {self.intervene} records the corrected episode (for `vla rth "
                              "learn-corrections`); pass --record-dir DIR")


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What happened: the loop's result plus the e-stop, watchdog and recording."""

    reason: str
    steps: int
    error: str | None
    policy_latency_ms_p50: float
    act_latency_ms_p50: float
    loop_period_ms_p50: float  # observe -> request -> act, step to step
    overruns: int
    safety_clamps: int
    watchdog_fired: bool
    estopped: bool
    dataset: pathlib.Path | None

    def summary(self) -> str:
        """Lines a person reads after a run."""
        lines = [f"ended: {self.reason} after {self.steps} steps" + (f" ({self.error})" if self.error else ""),
                 f"policy p50 {self.policy_latency_ms_p50:.1f} ms, act p50 {self.act_latency_ms_p50:.1f} ms, "
                 f"loop period p50 {self.loop_period_ms_p50:.1f} ms, overruns {self.overruns}, "
                 f"safety clamps {self.safety_clamps}"]
        if self.estopped:
            lines.append("E-STOP: the arm is holding its position with torque on; move it by hand only after "
                         "turning torque off (or rerun)")
        if self.dataset:
            lines.append(f"recorded: {self.dataset}")
        return "\n".join(lines)


class Watchdog:
    """Holds the arm when `kick()` has not been called for `timeout_s` (once per silence)."""

    def __init__(self, hold, timeout_s: float):
        self._hold, self.timeout_s = hold, timeout_s
        self._last: float | None = None  # None: not armed
        self._stop = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")
        self._thread.start()

    def kick(self) -> None:
        """An action reached the arm (arms the watchdog)."""
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(WATCHDOG_POLL_S):
            last = self._last
            if last is not None and time.monotonic() - last > self.timeout_s:
                self._last = None
                self.fired = True
                log.error("watchdog: no action for %.2f s; holding the arm", self.timeout_s)
                try:
                    self._hold()
                except Exception:  # the loop reports the timeout; a failed hold is logged loudly
                    log.exception("watchdog could not hold the arm")

    def stop(self) -> None:
        """End the watch thread."""
        self._stop.set()
        self._thread.join(timeout=1.0)


def key_source(stream: IO | None) -> IO | None:
    """The stream keys are read from: `stream`, else the terminal (None when there is none)."""
    return stream if stream is not None else (sys.stdin if sys.stdin and sys.stdin.isatty() else None)


class KeyboardEStop:
    """Calls `trigger` when one of `keys` is read from `stream` (the terminal by default)."""

    def __init__(self, trigger, keys: str, stream: IO | None = None, on_other=None):
        self._trigger, self._keys, self._on_other = trigger, keys.encode(), on_other  # on_other(str): other keys
        self._stop = threading.Event()
        self._stream = key_source(stream)
        self._saved = None
        if self._stream is None:
            log.warning("no terminal: the keyboard e-stop is off (Ctrl-C still stops the arm)")
            return
        fd = self._stream.fileno()
        if os.isatty(fd):  # read single keys without Enter, keep Ctrl-C working
            import termios
            import tty

            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        if self._poll(fd, 0.0):  # a key typed before the start counts, before anything moves
            return
        self._thread = threading.Thread(target=self._listen, args=(fd,), daemon=True, name="estop-keys")
        self._thread.start()

    def _poll(self, fd: int, timeout: float) -> bool:
        """Read what is waiting; True when listening is over (e-stop key seen, or end of input)."""
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return False
        data = os.read(fd, 64)
        if any(k in self._keys for k in data):
            self._trigger("key")
            return True
        if data and self._on_other is not None:
            self._on_other(data.decode(errors="replace"))
        return not data

    def _listen(self, fd: int) -> None:
        while not self._stop.is_set():
            if self._poll(fd, KEY_POLL_S):
                return

    def stop(self) -> None:
        """Stop listening and restore the terminal."""
        self._stop.set()
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None


class GuardedRobot:
    """Wraps a real robot for one run: e-stop gate, watchdog kicks, and a record of what was sent."""

    def __init__(self, robot: HoldableRobot, rig: Rig, watchdog_timeout_s: float):
        self.robot, self.spec, self.rig = robot, robot.spec, rig
        self.estop_reason: str | None = None
        self.estop_held = threading.Event()  # set once the e-stop's hold reached the arm
        self._lock = threading.Lock()
        self.watchdog = Watchdog(robot.hold, watchdog_timeout_s)
        self.record: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
        self._last: Observation | None = None
        self.step_times: list[float] = []

    def estop(self, why: str) -> None:
        """Hold the arm now and refuse every later action."""
        with self._lock:
            if self.estop_reason is None:
                self.estop_reason = why
                log.error("E-STOP (%s): holding the arm", why)
        try:
            self.robot.hold()
        finally:
            self.estop_held.set()

    def reset(self, seed: int | None = None) -> Observation:
        if self.estop_reason is not None:  # pressed before the episode began: do not start moving
            raise EStopError(f"e-stop ({self.estop_reason}) before the episode started; nothing moved")
        self._last = self.robot.reset(seed)
        self.watchdog.kick()
        return self._last

    def observe(self) -> Observation:
        return self.robot.observe()

    def act(self, action: np.ndarray) -> StepResult:
        if self.estop_reason is not None:
            raise EStopError(f"e-stop ({self.estop_reason}): no more actions are sent")
        result = self.robot.act(action)
        self.watchdog.kick()
        self.step_times.append(time.perf_counter())
        if self._last is not None:
            by_role = apply_rig(self._last, self.rig).images
            self.record.append((by_role, np.asarray(self._last.proprio, np.float32), np.asarray(action, np.float32)))
        self._last = result.observation
        return result

    def close(self) -> None:
        self.watchdog.stop()


class _GatedPolicy:
    """Refuses to ask the policy once the e-stop is pressed (the loop then ends), and knows when a call
    abandoned by the loop's deadline has returned (a ZeroMQ socket must not be closed under it)."""

    def __init__(self, policy, guarded: GuardedRobot, unnorm_key: str | None):
        self.policy, self.guarded, self.unnorm_key = policy, guarded, unnorm_key
        self._idle = threading.Event()
        self._idle.set()

    def act(self, obs: Observation, instruction: str):
        if self.guarded.estop_reason is not None:
            raise EStopError(f"e-stop ({self.guarded.estop_reason})")
        self._idle.clear()
        try:
            if self.unnorm_key is not None:
                return self.policy.act(obs, instruction, unnorm_key=self.unnorm_key)
            return self.policy.act(obs, instruction)
        finally:
            self._idle.set()

    def wait_idle(self) -> None:
        """Wait for a call still running (the client's own timeout bounds it)."""
        limit = getattr(self.policy, "timeout_s", IDLE_WAIT_S) + IDLE_WAIT_S
        if not self._idle.wait(limit):
            log.error("a policy call is still running after %.1f s", limit)


def _install_sigint_estop(guarded: GuardedRobot):
    """First Ctrl-C: e-stop from a helper thread (never inside a half-sent bus packet); second: interrupt.

    Returns a function restoring the previous handler. Off the main thread nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts for real
        threading.Thread(target=guarded.estop, args=("Ctrl-C",), daemon=True).start()

    signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


def _try_hold(robot: HoldableRobot) -> None:
    try:
        robot.hold()
    except HardwareError:  # e.g. the faulted servo no longer answers: say so, the episode is over anyway
        log.exception("could not hold the arm after a robot error")


def _p50_ms(values) -> float:
    return float(np.median(values) * 1e3) if len(values) else float("nan")


def write_recording(guarded: GuardedRobot, options: RunOptions, reason: str,
                    intervention=None) -> pathlib.Path | None:
    """Write the recorded steps as one RLDS episode; None when nothing was sent."""
    if options.record_dir is None:
        return None
    if not guarded.record:
        log.warning("no action reached the arm: nothing to record")
        return None
    from vla.data.rlds_writer import Episode, write_rlds

    roles = guarded.record[0][0].keys()
    extras, rth_meta = intervention.record(len(guarded.record)) if intervention is not None else ({}, {})
    episode = Episode(
        images={role: np.stack([step[0][role] for step in guarded.record]) for role in roles},
        state=np.stack([step[1] for step in guarded.record]),
        action=np.stack([step[2] for step in guarded.record]),
        instruction=options.instruction,
        success=None,  # a real rollout's success is for a person to label
        extras=extras,  # --intervene: per-step motion and motion_source
        metadata={"robot": guarded.spec.name, "end_reason": reason, "control_hz": float(guarded.spec.control_hz),
                  **rth_meta},
    )
    name = f"{options.dataset_name}_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}"
    path = write_rlds(options.record_dir, name, [episode], description=f"real {guarded.spec.name} rollout")
    log.info("recorded %d steps to %s", len(episode), path)
    return path


def run_on_robot(robot: HoldableRobot, policy, options: RunOptions, key_stream: IO | None = None) -> RunReport:
    """Run one episode of `policy` on a connected `robot` with watchdog, e-stop and recording.

    With `options.intervene`, `policy` must be a client of an RT-H server: keys typed at the terminal
    (other than the e-stop keys) override its motion, and the recording keeps motion and motion_source."""
    intervention = None
    if options.intervene is not None:  # checked before anything moves
        from vla.rth.errors import RTHError  # torch comes with vla: only runs that intervene load it
        from vla.rth.intervene import robot_intervention

        try:
            intervention = robot_intervention(options.intervene, policy, options.unnorm_key, options.estop_keys)
        except RTHError as e:
            raise ConfigError(str(e)) from e
        if key_source(key_stream) is None:
            raise ConfigError(f"--intervene {options.intervene} reads keys from a terminal, and this run has none")
        policy = intervention.policy
    period = 1.0 / robot.spec.control_hz
    deadline = options.watchdog_periods * period
    rig = resolve_rig(options.rig, robot.spec)
    guarded = GuardedRobot(robot, rig, deadline)
    keys = KeyboardEStop(guarded.estop, options.estop_keys, key_stream,
                         intervention.on_keys if intervention is not None else None)
    restore_sigint = _install_sigint_estop(guarded)
    result: EpisodeResult | None = None
    robot_error: str | None = None
    gate = _GatedPolicy(policy, guarded, options.unnorm_key)
    try:
        result = run_episode(
            guarded, gate, options.instruction, options.max_steps,
            rate_hz=robot.spec.control_hz, rig=rig, safety=SafetyFilter(robot.config.safety),
            policy_timeout_s=deadline, stop_on_success=False, record_frames=False)
    except KeyboardInterrupt:
        guarded.estop("Ctrl-C")
    except EStopError:
        pass  # pressed between the loop's policy call and its act: already holding
    except HardwareError as e:  # a fault, an unreachable target, an interrupted reset: stop where it is
        if guarded.estop_reason is None:
            robot_error = f"{type(e).__name__}: {e}"
            log.error("robot error, holding: %s", robot_error)
    except BaseException:  # anything unforeseen: hold first, then let it surface
        _try_hold(robot)
        raise
    finally:
        restore_sigint()
        keys.stop()
        guarded.close()
        gate.wait_idle()
    if guarded.estop_reason is not None:
        reason, error = ESTOP, f"e-stop ({guarded.estop_reason})"
        if not guarded.estop_held.wait(IDLE_WAIT_S):  # the key/signal thread is still sending the hold
            log.error("the e-stop hold did not complete within %.1f s", IDLE_WAIT_S)
    elif robot_error is not None:
        reason, error = ROBOT_ERROR, robot_error
        _try_hold(robot)
    elif result.reason == POLICY_TIMEOUT:
        reason, error = WATCHDOG, result.error
        _try_hold(robot)
    else:
        reason, error = result.reason, result.error
        _try_hold(robot)
    periods = np.diff(guarded.step_times)
    report = RunReport(
        reason=reason, steps=len(guarded.record), error=error,
        policy_latency_ms_p50=_p50_ms(result.policy_latency_s) if result else float("nan"),
        act_latency_ms_p50=_p50_ms(result.act_latency_s) if result else float("nan"),
        loop_period_ms_p50=_p50_ms(periods), overruns=result.overruns if result else 0,
        safety_clamps=result.safety_clamps if result else 0,
        watchdog_fired=guarded.watchdog.fired, estopped=guarded.estop_reason is not None,
        dataset=write_recording(guarded, options, reason, intervention))
    log.info("%s", report.summary())
    return report


def run(robot_config, server: str, options: RunOptions, key_stream: IO | None = None) -> RunReport:
    """Connect the robot and the policy server, run one episode, then rest (or hold after an e-stop)."""
    from serving.client import PolicyClient

    deadline = options.watchdog_periods / robot_config.control_hz
    client = PolicyClient(server, timeout_s=deadline * CLIENT_TIMEOUT_FACTOR)
    try:
        # reach the server before the arm moves: a wrong address fails here, and the first timed
        # step does not pay for the connection
        info = client.metadata()
        log.info("policy server %s: %s", server, info.get("name"))
        known = info.get("unnorm_keys") or []
        if options.unnorm_key is not None and known and options.unnorm_key not in known:
            raise ConfigError(f"the server at {server} has no statistics {options.unnorm_key!r}; "
                              f"it has {sorted(known)}. Pass one of them as --unnorm-key")
        robot = robot_config.make()
    except Exception:
        client.close()
        raise
    report = None
    try:
        report = run_on_robot(robot, client, options, key_stream)
    finally:
        client.close()
        robot.close(park=options.park_at_end and report is not None and not report.estopped)
    return report
