"""`PolicyServer`: one ZeroMQ ROUTER socket, one loop thread, dynamic batching of queued requests.

The loop drains every message already queued on the socket, answers `ping`/`metadata`/`reset`
at once, validates each `act` request on its own (a bad one gets its own error reply), and runs
compatible queued requests as one `act_batch` call. There is no fixed batching window by
default: a single client's request runs as soon as it arrives, and requests that arrived
meanwhile form the next batch.
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import os
import pathlib
import signal
import socket
import threading
import time
from typing import Any, Callable, Sequence

import zmq

from serving import protocol
from serving.errors import InvalidRequestError, ProtocolError, ProtocolVersionError, ServerConfigError
from serving.keys import ServerKeys
from serving.policies import ServedPolicy
from serving.protocol import ActRequest, RequestLimits

log = logging.getLogger(__name__)

_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: IntFlag arithmetic costs ~1 us a call
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
HARD_LIMIT_FACTOR = 4  # frames over this many times max_message_bytes drop the connection (memory guard)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """How the server batches, queues and shuts down."""

    limits: RequestLimits = RequestLimits()
    max_batch: int = 16  # requests per act_batch call
    max_queue: int = 256  # act requests waiting beyond this get an Overloaded reply
    batch_window_s: float = 0.0  # wait this long for more requests before a batch; 0 = only what is queued
    shutdown_linger_s: float = 2.0  # how long close() lets the last replies flush

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.batch_window_s < 0:
            raise ServerConfigError(f"{self} needs max_batch >= 1, max_queue >= 1, batch_window_s >= 0")


@dataclasses.dataclass
class ServerStats:
    """Counters a test or a log line can read: requests, batches, batch sizes, errors by type."""

    requests: int = 0
    batches: int = 0
    batch_sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(slots=True)
class _Pending:
    envelope: list  # ROUTER identity (+ empty delimiter for REQ/our DEALER)
    request_id: int | str
    request: ActRequest
    key: tuple
    received: float  # perf_counter() when the loop read it


def _error_type(exc: Exception) -> str:
    if isinstance(exc, ProtocolVersionError):
        return "VersionMismatch"
    return "BadRequest"


class PolicyServer:
    """Serves a `ServedPolicy` on tcp://host:port (port 0: the OS picks; see `.address`)."""

    def __init__(
        self,
        policy: ServedPolicy,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        options: ServerOptions = ServerOptions(),
        keys: ServerKeys | str | pathlib.Path | None = None,
    ) -> None:
        self.policy, self.options, self.stats = policy, options, ServerStats()
        self._auth, self._closed, self._wake_lock = None, False, threading.RLock()
        self._open(host, port, keys)
        self._waker.connect(self._wake_endpoint)
        self._metadata = {
            **policy.metadata(),
            "protocol_version": list(protocol.PROTOCOL_VERSION),
            "max_batch": options.max_batch,
            "limits": dataclasses.asdict(options.limits),
            "authenticated": keys is not None,
        }
        self._pending: list[_Pending] = []
        self._stop = threading.Event()
        self._running = threading.Event()
        self._finished = threading.Event()
        log.info("policy server on %s", self.address)

    def _open(self, host: str, port: int, keys: ServerKeys | str | pathlib.Path | None) -> None:
        options = self.options
        self._ctx = zmq.Context()
        # close() and signal handlers wake the blocked loop through this socket; a random routing id
        # keeps remote clients from posing as it
        self._wake_id, self._wake_endpoint = os.urandom(16), f"inproc://policy-server-wake-{id(self)}"
        self._waker = self._ctx.socket(zmq.DEALER)
        self._waker.routing_id, self._waker.linger = self._wake_id, 0
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = int(options.shutdown_linger_s * 1000)
        self._sock.setsockopt(zmq.MAXMSGSIZE, options.limits.max_message_bytes * HARD_LIMIT_FACTOR)
        try:
            if keys is not None:
                self._enable_curve(keys if isinstance(keys, ServerKeys) else ServerKeys.load(keys))
            self._sock.bind(f"tcp://{host}:{port if port else '*'}")
            self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._sock.bind(self._wake_endpoint)
        except (zmq.ZMQError, ServerConfigError) as e:
            self._teardown()
            raise ServerConfigError(f"cannot serve on {host}:{port}: {e}; pick a free --port or another --host") from e
        except Exception:
            self._teardown()
            raise

    def _enable_curve(self, keys: ServerKeys) -> None:
        from zmq.auth.thread import ThreadAuthenticator  # only servers with keys need the ZAP thread

        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(keys.authorized_dir))
        self._sock.curve_secretkey, self._sock.curve_publickey = keys.secret, keys.public
        self._sock.curve_server = True

    def metadata(self) -> dict[str, Any]:
        """What a `metadata` call answers."""
        return dict(self._metadata)

    # --- loop -------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until `close()` or SIGINT/SIGTERM; then answer what was received and return."""
        if self._closed or self._running.is_set():
            raise ServerConfigError("this server is closed or already serving; make a new PolicyServer")
        self._running.set()
        unwatch = self._watch_signals()
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not self._pending:
                    # block inside zmq with no timeout: a receive timeout cost ~25 us per request here;
                    # close() and signals wake this call with a message on the inproc endpoint
                    self._handle_safely(protocol.recv_frames(sock))
                self._drain()
                if self.options.batch_window_s and self._pending:
                    self._wait_window()
                if self._pending:
                    self._run_one_batch()
            # graceful: answer everything already received (in flight), then stop
            self._drain()
            while self._pending:
                self._run_one_batch()
        finally:
            unwatch()
            self._teardown()
            self._finished.set()
            log.info("policy server on %s stopped after %d requests in %d batches",
                     self.address, self.stats.requests, self.stats.batches)

    def _watch_signals(self) -> Callable[[], None]:
        """In the main thread (a server process): stop on SIGINT/SIGTERM, freeze start-up objects
        for the GC; returns the function that undoes the signal handling."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # only the main thread may install handlers; its owner handles signals
        # the process is a server from here on: keep the cyclic GC's full passes off the objects of
        # start-up (modules, model), which would otherwise be re-traversed every few thousand requests
        gc.freeze()
        # A Python handler runs only between bytecodes of the main thread, which sits blocked in zmq
        # (and a signal may land in a numpy or zmq thread). Python's C handler also writes the
        # signal number to the wakeup fd at once, from any thread: a helper thread reads it there.
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in _STOP_SIGNALS}
        old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

        def watch() -> None:
            while data := reader.recv(64):
                for signum in data:
                    if signum in _STOP_SIGNALS:
                        self._request_stop(signum)

        watcher = threading.Thread(target=watch, name="policy-server-signals", daemon=True)
        watcher.start()

        def unwatch() -> None:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            writer.close()  # the watcher's recv() returns b"" and it ends
            watcher.join(timeout=5)
            reader.close()

        return unwatch

    def _request_stop(self, signum: int) -> None:
        log.info("signal %s: finishing in-flight requests, then stopping", signal.Signals(signum).name)
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        """Interrupt a blocking receive so the loop sees the stop flag."""
        with self._wake_lock:
            if not self._closed:
                try:
                    protocol.send_frames(self._waker, [b"", b""], zmq.NOBLOCK)
                except zmq.ZMQError:  # a wake message is already queued: the loop will wake anyway
                    pass

    def _wait_window(self) -> None:
        deadline = time.perf_counter() + self.options.batch_window_s
        while len(self._pending) < self.options.max_batch:
            left_ms = (deadline - time.perf_counter()) * 1000
            if left_ms <= 0 or not self._sock.poll(max(1, int(left_ms))):
                return
            self._drain()

    def _drain(self) -> None:
        """Handle every message already queued on the socket, without blocking."""
        sock = self._sock
        while sock.getsockopt(_EVENTS) & _POLLIN:
            self._handle_safely(protocol.recv_frames(sock))

    def _handle_safely(self, frames: list) -> None:
        if frames[0] == self._wake_id:
            return  # close() or a signal: the loop checks the stop flag next
        try:
            self._handle(frames)
        except Exception as e:  # one message must never take the server down
            log.exception("unexpected error handling a message")
            self._send_error(self._split_envelope(frames)[0], None, "InternalError", f"{type(e).__name__}: {e}")

    @staticmethod
    def _split_envelope(frames: list) -> tuple[list, list]:
        # REQ clients and ours put an empty delimiter after the identity; a bare DEALER may not
        if len(frames) >= 2 and len(frames[1]) == 0:
            return frames[:2], frames[2:]
        return frames[:1], frames[1:]

    def _handle(self, frames: list) -> None:
        received = time.perf_counter()
        self.stats.requests += 1
        envelope, body = self._split_envelope(frames)
        size = 0
        for frame in body:
            size += len(frame)
        if size > self.options.limits.max_message_bytes:
            self._send_error(envelope, None, "TooLarge",
                             f"request of {size} bytes exceeds max_message_bytes={self.options.limits.max_message_bytes}; "
                             "send smaller images (resize on the robot computer)")
            return
        header: dict = {}
        try:
            header = protocol.unpack(body)
            req = protocol.parse_request(header)
            if req.call == "act":
                act = protocol.parse_act(req.body, self.options.limits)
                self.policy.check(act)
        except (ProtocolError, InvalidRequestError) as e:
            rid = protocol.request_id_of(header) if isinstance(header, dict) else None
            self._send_error(envelope, rid, _error_type(e), str(e))
            return
        if req.call == "act":
            if len(self._pending) >= self.options.max_queue:
                self._send_error(envelope, req.id, "Overloaded",
                                 f"{len(self._pending)} requests already queued (max_queue={self.options.max_queue}); retry later")
                return
            self._pending.append(_Pending(envelope, req.id, act, act.batch_key, received))
        elif req.call == "ping":
            self._send(envelope, protocol.pack_result(req.id, {}, {}))
        elif req.call == "metadata":
            self._send(envelope, protocol.pack_result(req.id, self._metadata, {}))
        elif req.call == "reset":
            self._call_reset(envelope, req.id)

    def _call_reset(self, envelope: list, request_id: int | str) -> None:
        try:
            self.policy.reset()
        except Exception as e:  # a policy bug is reported to the caller, the server goes on
            log.exception("policy.reset failed")
            self._send_error(envelope, request_id, "PolicyError", f"reset failed: {type(e).__name__}: {e}")
            return
        self._send(envelope, protocol.pack_result(request_id, {}, {}))

    def _run_one_batch(self) -> None:
        """Run the oldest queued request together with every compatible queued one (up to max_batch)."""
        key, batch, rest = self._pending[0].key, [], []
        for p in self._pending:
            (batch if p.key == key and len(batch) < self.options.max_batch else rest).append(p)
        self._pending = rest
        self.stats.batches += 1
        self.stats.batch_sizes[len(batch)] += 1
        self._run(batch)

    def _run(self, batch: Sequence[_Pending]) -> None:
        start = time.perf_counter()
        try:
            results = self.policy.act_batch([p.request for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"policy returned {len(results)} results for {len(batch)} requests")
        except Exception as e:  # the policy failed: isolate the request that caused it
            if len(batch) > 1:
                log.warning("batch of %d failed (%s); rerunning one by one", len(batch), e)
                for p in batch:
                    self._run([p])
                return
            log.exception("policy failed on request %r", batch[0].request_id)
            self._send_error(batch[0].envelope, batch[0].request_id, "PolicyError", f"{type(e).__name__}: {e}")
            return
        end = time.perf_counter()
        inference_ms = (end - start) * 1e3
        for p, result in zip(batch, results):
            timing = {"queue_ms": (start - p.received) * 1e3, "inference_ms": inference_ms, "batch_size": len(batch)}
            try:
                frames = protocol.pack_result(p.request_id, result, timing)
            except ProtocolError as e:
                self._send_error(p.envelope, p.request_id, "PolicyError", f"result cannot be sent: {e}")
                continue
            self._send(p.envelope, frames)

    def _send(self, envelope: list, frames: list) -> None:
        try:
            protocol.send_frames(self._sock, [*envelope, *frames])
        except zmq.ZMQError as e:  # the client went away; nothing to answer
            log.warning("reply not sent: %s", e)

    def _send_error(self, envelope: list, request_id: int | str | None, type_: str, message: str) -> None:
        self.stats.errors[type_] += 1
        log.info("error reply %s to request %r: %s", type_, request_id, message)
        self._send(envelope, protocol.pack_error(request_id, type_, message))

    # --- shutdown ---------------------------------------------------------------------------

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop serving (answering what was already received) and release the port."""
        self._stop.set()
        if self._running.is_set():
            self._wake()
            self._finished.wait(timeout_s)
        else:
            self._teardown()

    def _teardown(self) -> None:
        with self._wake_lock:
            if self._closed:
                return
            self._closed = True
            self._waker.close()
        self._sock.close()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def __enter__(self) -> PolicyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
