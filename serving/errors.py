"""Every error the serving package raises, under one base class; stdlib only (the client imports it).

Errors a server sends back travel as `{"error": {"type": <class name>, "message": ...}}`; the client
turns them back into the class of the same name (see `ERROR_TYPES`), so a caller can catch
`RequestRejectedError` for its own mistakes and `PolicyServerError` for everything the server said.
"""
from __future__ import annotations


class ServingError(Exception):
    """Base class of every serving error."""


class ProtocolError(ServingError):
    """A message does not follow serving/PROTOCOL.md (bad msgpack, bad array header, missing key)."""


class ProtocolVersionError(ProtocolError):
    """The two ends speak different major protocol versions."""


class InvalidRequestError(ServingError):
    """A well-formed request this policy cannot serve (unknown camera, unnorm key or option)."""


class PolicyTimeoutError(ServingError):
    """No reply within the client's timeout; the robot loop turns this into a safe stop."""


class AuthenticationError(ServingError):
    """The CURVE handshake failed: the server does not know this client's key (or the keys mismatch)."""


class KeysError(ServingError):
    """Key files are missing, unreadable, or would be overwritten."""


class ServerConfigError(ServingError):
    """The server cannot start with the given settings (checkpoint, port, keys, policy choice)."""


class PolicyServerError(ServingError):
    """The server replied with an error; `type` is the server-side error name."""

    def __init__(self, type_: str, message: str, request_id: object = None) -> None:
        super().__init__(f"{type_}: {message}")
        self.type, self.message, self.request_id = type_, message, request_id


class RequestRejectedError(PolicyServerError):
    """The server refused this request (bad shape, too large, unknown call); fix the request."""


class VersionMismatchError(PolicyServerError, ProtocolVersionError):
    """The server speaks another major protocol version than this client; upgrade one side."""


class OverloadedError(PolicyServerError):
    """The server's queue is full; back off or add servers."""


class PolicyFailedError(PolicyServerError):
    """The policy raised while computing the action; the server log has the traceback."""


# error name on the wire -> the class a client raises; unknown names become PolicyServerError
ERROR_TYPES: dict[str, type[PolicyServerError]] = {
    "BadRequest": RequestRejectedError,
    "TooLarge": RequestRejectedError,
    "UnknownCall": RequestRejectedError,
    "VersionMismatch": VersionMismatchError,
    "Overloaded": OverloadedError,
    "PolicyError": PolicyFailedError,
    "InternalError": PolicyServerError,
}
