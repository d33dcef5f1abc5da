"""PolicyServer on 127.0.0.1: calls, batching, limits, isolation of bad requests, shutdown, fuzzing."""
from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from serving_fixtures import SlowEchoPolicy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import protocol
from serving.client import PolicyClient
from serving.errors import (
    OverloadedError,
    PolicyFailedError,
    PolicyServerError,
    RequestRejectedError,
    ServerConfigError,
    VersionMismatchError,
)
from serving.policies import NoopPolicy
from serving.protocol import RequestLimits
from serving.server import PolicyServer, ServerOptions


def _raw_dealer(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger, sock.rcvtimeo = 0, 5000
    sock.connect(address)
    return sock


def _raw_call(sock: zmq.Socket, frames: list) -> dict:
    """Send frames as they are; return the reply header (arrays decoded)."""
    sock.send_multipart([b"", *frames])
    reply = sock.recv_multipart()
    assert reply[0] == b""
    return protocol.unpack(reply[1:])


def _wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def test_metadata_ping_reset_and_act(start_server, image) -> None:
    server = start_server(NoopPolicy(action_dim=5))
    with PolicyClient(server.address, timeout_s=5) as client:
        meta = client.metadata()
        assert meta["action_dim"] == 5 and meta["protocol_version"] == list(protocol.PROTOCOL_VERSION)
        assert client.ping() > 0
        client.reset()
        reply = client.act(images={"cam0": image}, instruction="pick up the cup", proprio=np.zeros(6, np.float32))
        assert reply.action.dtype == np.float32 and reply.action.tolist() == [0.0] * 5
        assert set(reply.timing) >= {"queue_ms", "inference_ms", "batch_size", "round_trip_ms"}
        reply.action[0] = 1.0  # the client hands out writable copies
        many = client.act(images={"cam0": image}, instruction="x", options={"n_samples": 4})
        assert many.candidates.shape == (4, 5) and many.request_id > reply.request_id
        with pytest.raises(AttributeError, match="candidates"):
            reply.candidates


def test_each_bad_request_gets_its_own_error_and_the_server_goes_on(start_server, image) -> None:
    server = start_server(NoopPolicy(7), options=ServerOptions(limits=RequestLimits(max_image_side=300)))
    with PolicyClient(server.address, timeout_s=5) as client:
        with pytest.raises(RequestRejectedError, match="sides must be"):
            client.act(images={"big": np.zeros((301, 10, 3), np.uint8)}, instruction="x")
        with pytest.raises(RequestRejectedError, match="uint8"):
            client.act(images={"a": image.astype(np.float32)}, instruction="x")
        with pytest.raises(RequestRejectedError, match="unsupported options"):
            client.act(images={"a": image}, instruction="x", options={"temperature": 0.5})
        with pytest.raises(RequestRejectedError, match="n_samples"):
            client.act(images={"a": image}, instruction="x", options={"n_samples": 0})
        assert client.act(images={"a": image}, instruction="x").action.shape == (7,)
    sock = _raw_dealer(server.address)
    err = _raw_call(sock, protocol.pack({"v": [9, 0], "id": 41, "call": "ping"}))
    assert err["id"] == 41 and err["error"]["type"] == "VersionMismatch" and "result" not in err
    with pytest.raises(VersionMismatchError):
        protocol.parse_reply(err)
    err = _raw_call(sock, [b"\xc1not msgpack"])
    assert err["id"] is None and err["error"]["type"] == "BadRequest"
    err = _raw_call(sock, protocol.pack({"v": [1, 0], "id": "abc", "call": "fly"}))
    assert err["id"] == "abc" and "known calls" in err["error"]["message"]
    assert server.stats.errors["BadRequest"] >= 5


def test_oversized_messages_get_a_too_large_reply(start_server) -> None:
    server = start_server(NoopPolicy(7), options=ServerOptions(limits=RequestLimits(max_message_bytes=50_000)))
    with PolicyClient(server.address, timeout_s=5) as client:
        with pytest.raises(RequestRejectedError, match="exceeds max_message_bytes"):
            client.act(images={"a": np.zeros((200, 200, 3), np.uint8)}, instruction="x")
        assert client.act(images={"a": np.zeros((100, 100, 3), np.uint8)}, instruction="x").action.shape == (7,)


def test_queued_compatible_requests_run_as_one_batch(start_server, image) -> None:
    policy = SlowEchoPolicy(delay_s=0.2)
    server = start_server(policy)
    sock = _raw_dealer(server.address)
    body = lambda i, img: protocol.act_body({"a": img}, str(i))  # noqa: E731
    # the first request occupies the policy; the next ones queue meanwhile and form batches
    sock.send_multipart([b"", *protocol.pack_request(0, "act", body(0, image))])
    _wait_until(lambda: policy.batches)
    for i in range(1, 6):
        sock.send_multipart([b"", *protocol.pack_request(i, "act", body(i, image))])
    for i in range(6, 8):  # another image size: a batch never mixes them
        sock.send_multipart([b"", *protocol.pack_request(i, "act", body(i, image[:100]))])
    replies = {}
    for _ in range(8):
        header = protocol.unpack(sock.recv_multipart()[1:])
        replies[header["id"]] = header
    assert sorted(replies) == list(range(8))
    for i, header in replies.items():
        assert header["result"]["action"][0] == i  # each reply answers its own request
    assert policy.batches[0] == 1 and sorted(policy.batches[1:]) == [2, 5]
    assert max(h["timing"]["batch_size"] for h in replies.values()) == 5


def test_a_failing_request_does_not_fail_its_batch_mates(start_server, image) -> None:
    policy = SlowEchoPolicy(delay_s=0.1)
    server = start_server(policy)
    sock = _raw_dealer(server.address)
    for i, text in enumerate(["0", "1", "fail", "3"]):
        sock.send_multipart([b"", *protocol.pack_request(i, "act", protocol.act_body({"a": image}, text))])
        if i == 0:
            _wait_until(lambda: policy.batches)  # 1..3 queue behind it and form one batch
    replies = {h["id"]: h for h in (protocol.unpack(sock.recv_multipart()[1:]) for _ in range(4))}
    assert replies[2]["error"]["type"] == "PolicyError" and "on purpose" in replies[2]["error"]["message"]
    assert [replies[i]["result"]["action"][0] for i in (0, 1, 3)] == [0, 1, 3]
    assert policy.batches[:5] == [1, 3, 1, 1, 1]  # the batch of 3 failed, then ran one by one
    with PolicyClient(server.address) as client, pytest.raises(PolicyFailedError):
        client.act(images={"a": image}, instruction="fail")


def test_queue_limit_answers_overloaded(start_server, image) -> None:
    policy = SlowEchoPolicy(delay_s=0.3)
    server = start_server(policy, options=ServerOptions(max_queue=2, max_batch=1))
    sock = _raw_dealer(server.address)
    for i in range(6):
        sock.send_multipart([b"", *protocol.pack_request(i, "act", protocol.act_body({"a": image}, str(i)))])
        if i == 0:
            _wait_until(lambda: policy.batches)  # 1 and 2 fill the queue, 3..5 are turned away
    replies = {h["id"]: h for h in (protocol.unpack(sock.recv_multipart()[1:]) for _ in range(6))}
    assert [i for i, r in sorted(replies.items()) if "result" in r] == [0, 1, 2]
    assert all(replies[i]["error"]["type"] == "Overloaded" for i in (3, 4, 5))
    with pytest.raises(OverloadedError, match="max_queue=2"):
        protocol.parse_reply(replies[3])


def test_req_socket_and_replay_from_a_fresh_socket_are_answered(start_server, image) -> None:
    server = start_server()
    frames = protocol.pack_request(7, "act", protocol.act_body({"a": image}, "x"))
    for _ in range(2):  # the same bytes again, from a new socket (new identity)
        req = zmq.Context.instance().socket(zmq.REQ)
        req.linger, req.rcvtimeo = 0, 5000
        req.connect(server.address)
        req.send_multipart(frames)
        _, result, _ = protocol.parse_reply(protocol.unpack(req.recv_multipart()))
        assert result["action"].shape == (7,)
        req.close()


def test_close_finishes_in_flight_requests(image) -> None:
    server = PolicyServer(SlowEchoPolicy(delay_s=0.3))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sock = _raw_dealer(server.address)
    for i in range(3):
        sock.send_multipart([b"", *protocol.pack_request(i, "act", protocol.act_body({"a": image}, str(i)))])
    time.sleep(0.1)  # all three are received; the first is running
    server.close()
    thread.join(5)
    assert not thread.is_alive()
    ids = sorted(protocol.unpack(sock.recv_multipart()[1:])["id"] for _ in range(3))
    assert ids == [0, 1, 2]


def test_port_in_use_is_a_config_error(start_server) -> None:
    server = start_server()
    port = int(server.address.rsplit(":", 1)[1])
    with pytest.raises(ServerConfigError, match="pick a free --port"):
        PolicyServer(NoopPolicy(7), port=port)


_frames = st.lists(st.binary(max_size=40) | st.builds(
    lambda h: msgpack.packb(h), st.dictionaries(st.sampled_from(["v", "id", "call", "body", "x"]),
                                                 st.none() | st.integers(-5, 5) | st.text(max_size=5)
                                                 | st.sampled_from([[1, 0], "act", {"images": {}}]), max_size=5)),
    min_size=0, max_size=4)


@pytest.fixture(scope="module")
def fuzz_target():
    server = PolicyServer(NoopPolicy(7))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sock = _raw_dealer(server.address)
    yield server, sock
    sock.close()
    server.close()
    thread.join(5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=_frames)
def test_fuzz_every_message_gets_one_error_reply_and_serving_continues(fuzz_target, frames) -> None:
    server, sock = fuzz_target
    header = _raw_call(sock, frames)
    assert ("error" in header) != ("result" in header)
    if "error" in header:
        assert header["error"]["type"] in ("BadRequest", "VersionMismatch", "TooLarge")
    ok = _raw_call(sock, protocol.pack_request(1, "act", protocol.act_body({"a": np.zeros((4, 4, 3), np.uint8)}, "x")))
    assert ok["result"]["action"].shape == (7,)


def test_a_batch_window_gathers_requests_that_arrive_soon_after(start_server, image) -> None:
    policy = SlowEchoPolicy()
    server = start_server(policy, options=ServerOptions(batch_window_s=0.5))
    sock = _raw_dealer(server.address)
    start = time.monotonic()
    sock.send_multipart([b"", *protocol.pack_request(0, "act", protocol.act_body({"a": image}, "0"))])
    time.sleep(0.1)  # well inside the window: joins the first request's batch
    sock.send_multipart([b"", *protocol.pack_request(1, "act", protocol.act_body({"a": image}, "1"))])
    replies = [protocol.unpack(sock.recv_multipart()[1:]) for _ in range(2)]
    assert policy.batches == [2] and {r["timing"]["batch_size"] for r in replies} == {2}
    assert time.monotonic() - start >= 0.45  # the first request waited for the window


class _BuggyPolicy(NoopPolicy):
    def check(self, request) -> None:
        if request.instruction == "bug":
            raise KeyError("a bug in the policy's own checks")


def test_a_policy_bug_is_an_internal_error_reply_not_a_crash(start_server, image) -> None:
    server = start_server(_BuggyPolicy(7))
    with PolicyClient(server.address, timeout_s=5) as client:
        with pytest.raises(PolicyServerError, match="InternalError: KeyError"):
            client.act(images={"a": image}, instruction="bug")
        assert client.act(images={"a": image}, instruction="fine").action.shape == (7,)


def test_bad_server_options_are_refused() -> None:
    with pytest.raises(ServerConfigError, match="max_batch >= 1"):
        ServerOptions(max_batch=0)
    with pytest.raises(ServerConfigError, match="max_batch >= 1"):
        ServerOptions(batch_window_s=-1.0)
