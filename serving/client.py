"""`PolicyClient`: the robot computer's side. Imports only stdlib, zmq, msgpack and numpy.

A DEALER socket with one request in flight. A timeout closes the socket and opens a fresh one
(so a late reply can never be taken for the next request's), then raises `PolicyTimeoutError`;
the next call reaches a restarted server through the new socket. The client never retries on
its own: the caller's control loop decides (usually: stop safely).
One client per thread (ZeroMQ sockets are not thread-safe).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import pathlib
import time
from typing import Any, Mapping

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from serving import protocol
from serving.errors import AuthenticationError, PolicyTimeoutError, ProtocolError
from serving.keys import ClientKeys

log = logging.getLogger(__name__)

_HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the server refused this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the security handshake failed (one side uses CURVE keys, the other not)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the security handshake failed (the server may require CURVE keys: "
                                          "pass keys=; or the keys do not match)",
}


@dataclasses.dataclass(frozen=True)
class Reply:
    """An `act` answer: `.action`, `.request_id`, `.timing` (ms), and extra results by attribute."""

    action: np.ndarray
    request_id: int | str
    timing: dict[str, float]
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. "candidates" for n_samples

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extras", {})  # not yet set while the dataclass is being built
        if name in extras:
            return extras[name]
        raise AttributeError(f"reply has no field {name!r}; it has action, request_id, timing and {sorted(extras)}")


def normalize_address(address: str) -> str:
    """'host:port' -> 'tcp://host:port'; full ZeroMQ endpoints pass through."""
    if "://" in address:
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ProtocolError(f"address {address!r} must be 'host:port' or a ZeroMQ endpoint like 'tcp://host:port'")
    return f"tcp://{address}"


class PolicyClient:
    """Talks to a `PolicyServer`; `act(obs, instruction)` makes it a `robot.Policy`."""

    def __init__(
        self,
        address: str,
        timeout_s: float = 5.0,
        keys: ClientKeys | str | pathlib.Path | None = None,
        *,
        key_name: str = "client",
        context: zmq.Context | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ProtocolError(f"timeout_s={timeout_s!r} must be > 0 seconds")
        self.address, self.timeout_s = normalize_address(address), timeout_s
        self._timeout_ms = int(timeout_s * 1000)
        self.keys = keys if isinstance(keys, ClientKeys) or keys is None else ClientKeys.load(keys, key_name)
        self._ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._sock, self._monitor = self._connect()

    def _connect(self) -> tuple[zmq.Socket, zmq.Socket]:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.immediate = True  # never queue a request for a peer that is not connected
        sock.sndtimeo = sock.rcvtimeo = self._timeout_ms
        if self.keys is not None:
            sock.curve_secretkey, sock.curve_publickey = self.keys.secret, self.keys.public
            sock.curve_serverkey = self.keys.server_public
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        sock.connect(self.address)
        return sock, monitor

    def _reset_socket(self) -> None:
        self._close_sockets()
        self._sock, self._monitor = self._connect()

    def _close_sockets(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def _timeout(self, what: str) -> PolicyTimeoutError | AuthenticationError:
        failures = []
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            failures.append(_HANDSHAKE_FAILED.get(event, f"zmq event {event}"))
        self._reset_socket()
        if failures:
            return AuthenticationError(f"{self.address}: {failures[-1]}; check the key folder passed as keys= "
                                       "and that the server's authorized/ folder holds this client's .key")
        return PolicyTimeoutError(f"no {what} from {self.address} within {self.timeout_s} s; is `vla serve` running "
                                  "there (and reachable)? The client reconnects on the next call")

    def _call(self, call: str, body: Mapping[str, Any] | None = None) -> tuple[int | str, dict, dict]:
        rid = next(self._ids)
        frames = protocol.pack_request(rid, call, body)
        try:
            protocol.send_frames(self._sock, [b"", *frames])
        except zmq.Again:
            raise self._timeout("connection") from None
        deadline, shortened = time.monotonic() + self.timeout_s, False
        while True:
            try:
                msg = protocol.recv_frames(self._sock)
            except zmq.Again:
                raise self._timeout("reply") from None
            if not msg or len(msg[0]) != 0:
                raise ProtocolError("reply lacks the empty delimiter frame; is this a vla PolicyServer?")
            header = protocol.unpack(msg[1:])
            if "id" not in header:
                raise ProtocolError("reply lacks its request id; is this a vla PolicyServer?")
            if header["id"] in (rid, None):  # None: the server could not read our id
                if shortened:
                    self._sock.rcvtimeo = self._timeout_ms
                return (rid, *protocol.parse_reply(header)[1:])
            log.warning("dropping a reply to request %r while waiting for %r", header["id"], rid)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout("reply")
            self._sock.rcvtimeo, shortened = max(1, int(left * 1000)), True

    def act(
        self,
        obs: Any = None,
        instruction: str | None = None,
        *,
        images: Mapping[str, np.ndarray] | None = None,
        proprio: np.ndarray | None = None,
        unnorm_key: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Reply:
        """The action for one observation (`obs.images`/`obs.proprio`, or `images=`/`proprio=`)."""
        if obs is not None:
            if images is not None:
                raise ProtocolError("pass either obs or images=, not both")
            images, proprio = obs.images, obs.proprio if proprio is None else proprio
        if images is None or instruction is None:
            raise ProtocolError("act needs images (or an observation with .images) and an instruction")
        start = time.perf_counter()
        rid, result, timing = self._call("act", protocol.act_body(images, instruction, proprio, unnorm_key, options))
        if not isinstance(result.get("action"), np.ndarray):
            raise ProtocolError(f"act reply lacks an 'action' array: {sorted(result)}")
        timing["round_trip_ms"] = (time.perf_counter() - start) * 1e3
        # copies: arrays decoded over the received frame are read-only, callers may edit actions
        out = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in result.items()}
        return Reply(out.pop("action"), rid, timing, out)

    def metadata(self) -> dict[str, Any]:
        """Model name, action dim and space, cameras, image size, unnorm keys, protocol version."""
        return self._call("metadata")[1]

    def reset(self) -> None:
        """Ask the server's policy to forget per-episode state."""
        self._call("reset")

    def ping(self) -> float:
        """Round-trip time of an empty request, in seconds."""
        start = time.perf_counter()
        self._call("ping")
        return time.perf_counter() - start

    def close(self) -> None:
        """Close the socket (the shared ZeroMQ context stays)."""
        if not self._sock.closed:
            self._close_sockets()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
