"""The wire format: array frames, header checks, version, error replies; fuzzed with hypothesis."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import protocol
from serving.errors import (
    OverloadedError,
    PolicyFailedError,
    ProtocolError,
    ProtocolVersionError,
    RequestRejectedError,
    VersionMismatchError,
)

LIMITS = protocol.RequestLimits()


def _wire(frames: list) -> list[bytes]:
    """What the other end receives: every frame as bytes."""
    return [bytes(memoryview(f).cast("B")) for f in frames]


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64", "float16", "float32", ">f8", "bool"])
@pytest.mark.parametrize("shape", [(), (7,), (0, 3), (3, 40, 40)])
def test_arrays_round_trip_exactly(dtype: str, shape: tuple) -> None:
    arr = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    out = protocol.unpack(_wire(protocol.pack({"a": arr, "nested": [{"b": arr}]})))
    for got in (out["a"], out["nested"][0]["b"]):
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)


def test_large_arrays_travel_as_their_own_frame_and_small_inline() -> None:
    image, action = np.zeros((224, 224, 3), np.uint8), np.zeros(7, np.float32)
    frames = protocol.pack({"image": image, "action": action})
    assert len(frames) == 2 and memoryview(frames[1]).nbytes == image.nbytes
    assert len(frames[0]) < 100  # the header holds no image bytes


def test_non_contiguous_arrays_are_sent_by_value() -> None:
    arr = np.arange(600, dtype=np.float32).reshape(20, 30)[:, ::2]
    assert np.array_equal(protocol.unpack(_wire(protocol.pack({"a": arr})))["a"], arr)


@pytest.mark.parametrize("bad", [np.array([object()]), np.zeros(2, "V4"), np.array(["text"]), {1, 2}])
def test_unsendable_values_raise_protocol_error(bad: object) -> None:
    with pytest.raises(ProtocolError):
        protocol.pack({"a": bad})


def _frame_ext(dtype: object, shape: object, index: object = 1) -> msgpack.ExtType:
    return msgpack.ExtType(protocol.EXT_FRAME, msgpack.packb([dtype, shape, index]))


@pytest.mark.parametrize(
    "ext, frame",
    [
        (_frame_ext("|u1", [-1]), b"abc"),  # numpy would read -1 as "infer"
        (_frame_ext("|u1", [2, -3]), b"abcdef"),
        (_frame_ext("|u1", [4]), b"abc"),  # byte count mismatch
        (_frame_ext("|O", [1]), b"12345678"),  # object dtype
        (_frame_ext("<U1", [1]), b"abcd"),  # str dtype
        (_frame_ext("nonsense", [1]), b"a"),
        (_frame_ext(7, [1]), b"a"),
        (_frame_ext("|u1", [2**62, 2**62]), b"a"),  # huge shape
        (_frame_ext("|u1", [1] * 9), b"a"),  # too many dims
        (_frame_ext("|u1", [1], index=2), b"a"),  # no such frame
        (_frame_ext("|u1", [1.0]), b"a"),
        (msgpack.ExtType(9, b"x"), b"a"),  # unknown ext type
        (msgpack.ExtType(protocol.EXT_FRAME, b"\xc1"), b"a"),  # ext payload not msgpack
    ],
)
def test_bad_array_headers_are_refused(ext: msgpack.ExtType, frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.unpack([msgpack.packb({"a": ext}), frame])


def test_frames_must_each_be_referenced_once() -> None:
    ext = _frame_ext("|u1", [1])
    with pytest.raises(ProtocolError, match="referenced"):
        protocol.unpack([msgpack.packb({"a": ext}), b"a", b"b"])
    with pytest.raises(ProtocolError, match="unused frame"):
        protocol.unpack([msgpack.packb({"a": ext, "b": ext}), b"a"])


@pytest.mark.parametrize("header", [b"", b"\xc1", b"\x91" * 5000, msgpack.packb([1, 2]), msgpack.packb({1: 2}) + b"x"])
def test_undecodable_headers_raise_protocol_error(header: bytes) -> None:
    with pytest.raises(ProtocolError):  # includes msgpack's StackError past depth 1024
        protocol.unpack([header])


def test_request_round_trip_and_act_validation(image: np.ndarray) -> None:
    frames = protocol.pack_request("r-1", "act", protocol.act_body(
        {"primary": image}, "pick", proprio=np.zeros(8, np.float32), unnorm_key="bridge", options={"n_samples": 4}))
    req = protocol.parse_request(protocol.unpack(_wire(frames)))
    act = protocol.parse_act(req.body, LIMITS)
    assert (req.id, req.call, act.instruction, act.unnorm_key, dict(act.options)) == ("r-1", "act", "pick", "bridge", {"n_samples": 4})
    assert np.array_equal(act.images["primary"], image) and act.proprio.shape == (8,)


@pytest.mark.parametrize(
    "body, match",
    [
        ({"instruction": "x"}, "needs 'images'"),
        ({"images": {}, "instruction": "x"}, "non-empty"),
        ({"images": {"a": np.zeros((4, 4), np.uint8)}, "instruction": "x"}, "uint8 \\[H, W, 3\\]"),
        ({"images": {"a": np.zeros((4, 4, 3), np.float32)}, "instruction": "x"}, "uint8"),
        ({"images": {"a": np.zeros((0, 4, 3), np.uint8)}, "instruction": "x"}, "sides"),
        ({"images": {"a": np.zeros((5000, 1, 3), np.uint8)}, "instruction": "x"}, "sides"),
        ({"images": {"a": "img"}, "instruction": "x"}, "str"),
        ({"images": {"a": np.zeros((4, 4, 3), np.uint8)}, "instruction": 3}, "instruction"),
        ({"images": {"a": np.zeros((4, 4, 3), np.uint8)}, "instruction": "x", "proprio": np.zeros((2, 2))}, "proprio"),
        ({"images": {"a": np.zeros((4, 4, 3), np.uint8)}, "instruction": "x", "unnorm_key": 5}, "unnorm_key"),
        ({"images": {"a": np.zeros((4, 4, 3), np.uint8)}, "instruction": "x", "options": {"k": [1]}}, "options"),
        ({"images": {"a": np.zeros((4, 4, 3), np.uint8)}, "instruction": "x", "extra": 1}, "unknown act fields"),
    ],
)
def test_bad_act_bodies_name_the_field(body: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol.parse_act(body, LIMITS)


@pytest.mark.parametrize(
    "header, match",
    [
        ({"id": 1, "call": "ping"}, "'v'"),
        ({"v": [1, 0], "call": "ping"}, "'id'"),
        ({"v": [1, 0], "id": [1], "call": "ping"}, "'id'"),
        ({"v": [1, 0], "id": 1, "call": "fly"}, "known calls"),
        ({"v": [1, 0], "id": 1, "call": "act", "body": [1]}, "'body'"),
        ({"v": [1, 0], "id": 1, "call": "ping", "x": 1}, "unknown request fields"),
    ],
)
def test_bad_request_headers_name_the_field(header: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol.parse_request(header)


def test_other_major_version_is_refused_but_minor_is_accepted() -> None:
    major, minor = protocol.PROTOCOL_VERSION
    with pytest.raises(ProtocolVersionError, match="same major version"):
        protocol.parse_request({"v": [major + 1, 0], "id": 1, "call": "ping"})
    assert protocol.parse_request({"v": [major, minor + 5], "id": 1, "call": "ping"}).call == "ping"


def test_error_and_result_replies_differ_by_structure() -> None:
    ok = protocol.unpack(_wire(protocol.pack_result(3, {"action": np.ones(7, np.float32)}, {"queue_ms": 0.1})))
    assert "result" in ok and "error" not in ok
    rid, result, timing = protocol.parse_reply(ok)
    assert rid == 3 and result["action"].tolist() == [1.0] * 7 and timing == {"queue_ms": 0.1}
    for type_, cls in [("BadRequest", RequestRejectedError), ("Overloaded", OverloadedError),
                       ("PolicyError", PolicyFailedError), ("VersionMismatch", VersionMismatchError)]:
        err = protocol.unpack(_wire(protocol.pack_error(3, type_, "what and how to fix")))
        assert "error" in err and "result" not in err
        with pytest.raises(cls, match="what and how to fix") as info:
            protocol.parse_reply(err)
        assert info.value.type == type_ and info.value.request_id == 3
    with pytest.raises(ProtocolError, match="exactly one"):
        protocol.parse_reply({"v": [1, 0], "id": 1, "result": {}, "error": {}})


# --- fuzzing: whatever arrives, decoding raises ProtocolError or yields a valid request ------

_ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
_scalars = st.none() | st.booleans() | _ints | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
_exts = st.builds(lambda c, d, s, r: msgpack.ExtType(c, msgpack.packb([d, s, r])),
                  st.sampled_from([1, 2, 3, 127]), st.sampled_from(["|u1", "<f4", "|O", "<U2", "|V4", "x", ""]) | _scalars,
                  st.lists(st.integers(-3, 2**40), max_size=4) | _scalars, st.integers(-1, 3) | st.binary(max_size=16))


def _decode_all(frames: list[bytes]) -> None:
    req = protocol.parse_request(protocol.unpack(frames))
    if req.call == "act":
        protocol.parse_act(req.body, LIMITS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_fuzz_random_bytes_never_crash_the_decoder(frames: list[bytes]) -> None:
    try:
        _decode_all(frames)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries({}, optional={
        "v": st.sampled_from([[1, 0], [2, 0], [1], "1.0"]) | _values,
        "id": _ints | st.text(max_size=200) | _values,
        "call": st.sampled_from(list(protocol.CALLS)) | _values,
        "body": st.fixed_dictionaries({}, optional={
            "images": st.dictionaries(st.text(max_size=4), _exts | _values, max_size=3) | _values,
            "instruction": st.text(max_size=20) | _values,
            "proprio": _exts | _values, "unnorm_key": _values, "options": _values}) | _values,
    }),
    st.lists(st.binary(max_size=64), max_size=3),
)
def test_fuzz_structured_garbage_gives_protocol_errors(header: dict, frames: list[bytes]) -> None:
    try:
        _decode_all([msgpack.packb(header), *frames])
    except ProtocolError:
        pass
