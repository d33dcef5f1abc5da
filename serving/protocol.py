"""The wire format (serving/PROTOCOL.md): a msgpack header frame, then one raw frame per large array.

Imports only stdlib, msgpack and numpy: the robot computer's client uses this module without torch.
Every decoded field is checked; anything that does not fit raises `ProtocolError` naming the field.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Mapping

import msgpack
import numpy as np
import zmq

from serving.errors import (
    ERROR_TYPES,
    PolicyServerError,
    ProtocolError,
    ProtocolVersionError,
)

PROTOCOL_VERSION = (1, 0)  # (major, minor): a major change breaks old peers, a minor one does not
CALLS = ("ping", "metadata", "act", "reset")
EXT_INLINE = 1  # ext payload: msgpack [dtype, shape, raw bytes]; for small arrays (actions, proprio)
EXT_FRAME = 2  # ext payload: msgpack [dtype, shape, frame index]; the bytes are frame index + 1
FRAME_MIN_BYTES = 1024  # arrays this large go as their own frame, never copied into the header
ARRAY_KINDS = "biuf"  # bool, int, uint, float; object/void/str would mean pickle-like surprises
MAX_NDIM = 8
MAX_ID_CHARS = 128
_REQUEST_KEYS = frozenset({"v", "id", "call", "body"})
_ACT_KEYS = frozenset({"images", "instruction", "proprio", "unnorm_key", "options"})


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may contain; over-limit requests get an error reply, never a crash."""

    max_message_bytes: int = 64 * 2**20  # all frames of one request together
    max_image_side: int = 4096  # pixels, height and width each
    max_images: int = 8  # cameras per observation
    max_instruction_chars: int = 2048
    max_proprio_dims: int = 256


@dataclasses.dataclass(frozen=True)
class Request:
    """A decoded request header: who asked (`id`), what (`call`), and the call's `body`."""

    id: int | str
    call: str
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ActRequest:
    """One observation to act on, validated; `batch_key` groups requests that may share a batch."""

    images: Mapping[str, np.ndarray]  # camera name (or role) -> uint8 [H, W, 3]
    instruction: str
    proprio: np.ndarray | None = None
    unnorm_key: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can run as one batch: same cameras, shapes, statistics, options."""
        cams = tuple(sorted((k, v.shape) for k, v in self.images.items()))
        proprio = None if self.proprio is None else self.proprio.shape
        return cams, proprio, self.unnorm_key, tuple(sorted(self.options.items()))


# --- arrays -------------------------------------------------------------------------------------


_DTYPES: dict[str, np.dtype] = {}  # accepted dtype strings (a few dozen exist), checked once


def _checked_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, str) or len(dtype) > 8:
        raise ProtocolError(f"array dtype {dtype!r} must be a numpy dtype string such as '|u1' or '<f4'")
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ProtocolError(f"array dtype {dtype!r} is not a numpy dtype string") from e
    if dt.kind not in ARRAY_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise ProtocolError(f"array dtype {dtype!r} is not allowed; use bool, int, uint or float")
    _DTYPES[dtype] = dt  # only accepted ones: the cache cannot grow with garbage input
    return dt


def decode_array(dtype: Any, shape: Any, buf: Any) -> np.ndarray:
    """A read-only array over `buf` after checking dtype, shape and byte count against each other."""
    dt = _DTYPES.get(dtype) if type(dtype) is str else None
    if dt is None:
        dt = _checked_dtype(dtype)
    # numpy 2 reshape reads any negative dimension as "infer", so negatives are refused here
    if type(shape) is not list or len(shape) > MAX_NDIM:
        raise ProtocolError(f"array shape {shape!r} must be a list of at most {MAX_NDIM} non-negative ints")
    for d in shape:
        if type(d) is not int or d < 0:
            raise ProtocolError(f"array shape {shape!r} must be a list of at most {MAX_NDIM} non-negative ints")
    if type(buf) is not bytes:  # frames arrive as bytes (recv copy=True), inline data as msgpack bin
        raise ProtocolError(f"array data must be bytes, got {type(buf).__name__}")
    nbytes = len(buf)
    if math.prod(shape) * dt.itemsize != nbytes:
        raise ProtocolError(f"array header dtype={dtype} shape={shape} does not match a {nbytes}-byte frame")
    return np.frombuffer(buf, dt).reshape(shape)


class _Encoder:
    """Packs headers with long-lived msgpack Packers: `msgpack.packb` builds a Packer with a fresh
    256 KiB buffer per call, which cost more than the packing itself (one encoder per thread)."""

    def __init__(self) -> None:
        self.frames: list = []
        self.packer = msgpack.Packer(default=self.default)  # resets its buffer after each pack
        self.ext_packer = msgpack.Packer()

    def default(self, obj: Any) -> msgpack.ExtType:
        if not isinstance(obj, (np.ndarray, np.generic)):
            raise ProtocolError(f"cannot send a {type(obj).__name__}; send numpy arrays, str, numbers, lists, dicts")
        arr = np.asarray(obj)  # not ascontiguousarray: it turns 0-d arrays into 1-d ones
        if not arr.flags.c_contiguous:
            arr = np.array(arr, order="C")
        if arr.dtype.kind not in ARRAY_KINDS:
            raise ProtocolError(f"cannot send an array of dtype {arr.dtype}; use bool, int, uint or float")
        if arr.nbytes >= FRAME_MIN_BYTES:
            self.frames.append(arr)  # zmq copies the buffer once into its message; no tobytes() here
            return msgpack.ExtType(EXT_FRAME, self.ext_packer.pack([arr.dtype.str, arr.shape, len(self.frames)]))
        return msgpack.ExtType(EXT_INLINE, self.ext_packer.pack([arr.dtype.str, arr.shape, arr.tobytes()]))

    def pack(self, message: Mapping[str, Any]) -> list:
        self.frames = []
        try:
            header = self.packer.pack(message)
        except (TypeError, ValueError, OverflowError) as e:  # the Packer resets itself on errors
            raise ProtocolError(f"cannot encode message: {e}") from e
        return [header, *self.frames]


_encoders = threading.local()


def pack(message: Mapping[str, Any]) -> list:
    """Frames for a message: the msgpack header, then the buffers of its large arrays."""
    encoder = getattr(_encoders, "encoder", None)  # created on a thread's first message
    if encoder is None:
        encoder = _encoders.encoder = _Encoder()
    return encoder.pack(message)


def unpack(frames: list) -> dict[str, Any]:
    """The header map of a message, its array references replaced by arrays over the later frames."""
    if not frames:
        raise ProtocolError("empty message: expected a msgpack header frame")
    used: set[int] = set()

    def ext_hook(code: int, data: bytes) -> np.ndarray:
        if code not in (EXT_INLINE, EXT_FRAME):
            raise ProtocolError(f"unknown msgpack ext type {code}; arrays use {EXT_INLINE} or {EXT_FRAME}")
        parts = msgpack.unpackb(data, raw=False)
        if not isinstance(parts, list) or len(parts) != 3:
            raise ProtocolError("array ext must hold [dtype, shape, data or frame index]")
        dtype, shape, ref = parts
        if code == EXT_INLINE:
            return decode_array(dtype, shape, ref)
        if type(ref) is not int or not 1 <= ref < len(frames) or ref in used:
            raise ProtocolError(f"array frame index {ref!r} is not an unused frame of {len(frames) - 1}")
        used.add(ref)
        return decode_array(dtype, shape, frames[ref])

    try:
        header = msgpack.unpackb(frames[0], raw=False, ext_hook=ext_hook)
    except ProtocolError:
        raise
    # msgpack raises ValueError subclasses (StackError past depth 1024, ExtraData, bad UTF-8) and
    # TypeError/OverflowError on odd input; all mean "not our format"
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as e:
        raise ProtocolError(f"header is not valid msgpack: {type(e).__name__}: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(header).__name__}")
    if len(used) != len(frames) - 1:
        raise ProtocolError(f"{len(frames) - 1} array frames sent but {len(used)} referenced by the header")
    return header


# --- frames on a socket --------------------------------------------------------------------------

# plain ints: pyzmq's send_multipart/recv_multipart combine IntFlag members on every frame, which
# cost ~10 us per request and reply here
_SNDMORE, _RCVMORE = int(zmq.SNDMORE), int(zmq.RCVMORE)


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send `frames` as one multipart message (copying each buffer once into zmq)."""
    send, last = sock.send, len(frames) - 1
    for i, frame in enumerate(frames):
        send(frame, flags | _SNDMORE if i < last else flags)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    """Receive one multipart message as a list of bytes."""
    recv, more = sock.recv, sock.getsockopt
    frames = [recv(flags)]
    while more(_RCVMORE):
        frames.append(recv())
    return frames


# --- requests (client -> server) ----------------------------------------------------------------


def pack_request(request_id: int | str, call: str, body: Mapping[str, Any] | None = None) -> list:
    """Frames of one request."""
    return pack({"v": PROTOCOL_VERSION, "id": request_id, "call": call, "body": body or {}})


def _check_version(header: Mapping[str, Any], peer: str) -> None:
    version = header.get("v")  # optional only in the sense that its absence is reported below
    if not (isinstance(version, list) and len(version) == 2 and all(type(x) is int for x in version)):
        raise ProtocolError(f"{peer} header field 'v' must be [major, minor], got {version!r}")
    if version[0] != PROTOCOL_VERSION[0]:
        raise ProtocolVersionError(
            f"{peer} speaks protocol {version[0]}.{version[1]}, this side {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}; "
            "install the same major version of vla-stack on the robot computer and the server"
        )


def request_id_of(header: Mapping[str, Any]) -> int | str | None:
    """The request id if it is well formed (so even a rejected request's reply carries it)."""
    rid = header.get("id")
    if type(rid) is int and -(2**63) <= rid < 2**64:
        return rid
    if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS:
        return rid
    return None


def parse_request(header: Mapping[str, Any]) -> Request:
    """A `Request` from an unpacked header, or `ProtocolError` naming what is wrong."""
    _check_version(header, "client")
    rid = request_id_of(header)
    if rid is None:
        raise ProtocolError(f"request field 'id' must be an int or a string of <= {MAX_ID_CHARS} chars, got {header.get('id')!r}")
    call = header.get("call")
    if call not in CALLS:
        raise ProtocolError(f"request field 'call' is {call!r}; known calls: {', '.join(CALLS)}")
    body = header.get("body", {})
    if not isinstance(body, dict):
        raise ProtocolError(f"request field 'body' must be a map, got {type(body).__name__}")
    if not _REQUEST_KEYS.issuperset(header):
        unknown = set(header) - _REQUEST_KEYS
        raise ProtocolError(f"unknown request fields {sorted(map(str, unknown))}; allowed: v, id, call, body")
    return Request(rid, call, body)


def act_body(
    images: Mapping[str, np.ndarray],
    instruction: str,
    proprio: np.ndarray | None = None,
    unnorm_key: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of an `act` request (optional fields left out when unset)."""
    body: dict[str, Any] = {"images": dict(images), "instruction": instruction}
    if proprio is not None:
        body["proprio"] = np.asarray(proprio)
    if unnorm_key is not None:
        body["unnorm_key"] = unnorm_key
    if options:
        body["options"] = dict(options)
    return body


def parse_act(body: Mapping[str, Any], limits: RequestLimits) -> ActRequest:
    """A validated `ActRequest` from an `act` body; each mismatch names the field and the fix."""
    if not _ACT_KEYS.issuperset(body):
        unknown = set(body) - _ACT_KEYS
        raise ProtocolError(f"unknown act fields {sorted(map(str, unknown))}; allowed: images, instruction, proprio, unnorm_key, options")
    if "images" not in body or "instruction" not in body:
        raise ProtocolError("act needs 'images' ({camera: uint8 HxWx3}) and 'instruction' (str)")
    images = body["images"]
    if not isinstance(images, dict) or not images:
        raise ProtocolError("act field 'images' must be a non-empty map camera name -> uint8 [H, W, 3]")
    if len(images) > limits.max_images:
        raise ProtocolError(f"{len(images)} images sent; this server accepts at most {limits.max_images}")
    for name, img in images.items():
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ProtocolError(f"image {name!r} is {desc}; send uint8 [H, W, 3] (RGB)")
        if not (0 < img.shape[0] <= limits.max_image_side and 0 < img.shape[1] <= limits.max_image_side):
            raise ProtocolError(f"image {name!r} is {img.shape[0]}x{img.shape[1]}; sides must be 1..{limits.max_image_side} px")
    instruction = body["instruction"]
    if not isinstance(instruction, str) or len(instruction) > limits.max_instruction_chars:
        raise ProtocolError(f"act field 'instruction' must be a str of <= {limits.max_instruction_chars} chars")
    proprio = body.get("proprio")  # optional field
    if proprio is not None and not (
        isinstance(proprio, np.ndarray) and proprio.ndim == 1 and proprio.dtype.kind == "f"
        and proprio.shape[0] <= limits.max_proprio_dims
    ):
        raise ProtocolError(f"act field 'proprio' must be a 1-D float array of <= {limits.max_proprio_dims} dims")
    unnorm_key = body.get("unnorm_key")  # optional field
    if unnorm_key is not None and not isinstance(unnorm_key, str):
        raise ProtocolError(f"act field 'unnorm_key' must be a str, got {type(unnorm_key).__name__}")
    options = body.get("options", {})  # optional field
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and (v is None or type(v) in (bool, int, float, str)) for k, v in options.items()
    ):
        raise ProtocolError("act field 'options' must be a map str -> bool/int/float/str")
    return ActRequest(images, instruction, proprio, unnorm_key, options)


# --- replies (server -> client) -----------------------------------------------------------------


def pack_result(request_id: int | str, result: Mapping[str, Any], timing: Mapping[str, float]) -> list:
    """Frames of a success reply: it has a `result` key and no `error` key."""
    return pack({"v": PROTOCOL_VERSION, "id": request_id, "result": result, "timing": timing})


def pack_error(request_id: int | str | None, type_: str, message: str) -> list:
    """Frames of an error reply: it has an `error` key and no `result` key."""
    return pack({"v": PROTOCOL_VERSION, "id": request_id, "error": {"type": type_, "message": message}})


def parse_reply(header: Mapping[str, Any]) -> tuple[int | str | None, dict[str, Any], dict[str, float]]:
    """(id, result, timing) of a success reply; raises the `PolicyServerError` an error reply names."""
    has_result, has_error = "result" in header, "error" in header
    if has_result == has_error:
        raise ProtocolError("reply must carry exactly one of 'result' and 'error'")
    if has_error:
        err = header["error"]
        if not (isinstance(err, dict) and isinstance(err.get("type"), str) and isinstance(err.get("message"), str)):
            raise ProtocolError(f"error reply must be {{'type': str, 'message': str}}, got {err!r}")
        raise ERROR_TYPES.get(err["type"], PolicyServerError)(err["type"], err["message"], header.get("id"))
    _check_version(header, "server")
    result, timing = header["result"], header.get("timing", {})  # timing is informative only
    if not isinstance(result, dict) or not isinstance(timing, dict):
        raise ProtocolError("reply 'result' and 'timing' must be maps")
    return header.get("id"), result, timing
