"""PolicyClient: torch-free import, typed timeouts, reconnect after a server restart, robot.Policy use."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from robot import Observation
from serving.client import PolicyClient, normalize_address
from serving.errors import PolicyTimeoutError, ProtocolError
from serving.policies import NoopPolicy
from serving.server import PolicyServer


def test_client_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; import serving.client, serving.protocol; "
            "assert 'torch' not in {m for m in sys.modules if sys.modules[m] is not None}; "
            "print(serving.client.PolicyClient.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PolicyClient"


def test_no_server_raises_a_typed_timeout_quickly() -> None:
    client = PolicyClient("127.0.0.1:1", timeout_s=0.3)  # nothing listens on port 1
    start = time.monotonic()
    with pytest.raises(PolicyTimeoutError, match="is `vla serve` running"):
        client.act(images={"a": np.zeros((4, 4, 3), np.uint8)}, instruction="x")
    assert time.monotonic() - start < 2.0
    client.close()


def _serve(port: int) -> tuple[PolicyServer, threading.Thread]:
    server = PolicyServer(NoopPolicy(7), port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_reconnects_after_a_server_restart(image) -> None:
    server, thread = _serve(0)
    port = int(server.address.rsplit(":", 1)[1])
    client = PolicyClient(server.address, timeout_s=0.5)
    assert client.act(images={"a": image}, instruction="x").action.shape == (7,)
    server.close()
    thread.join(5)
    with pytest.raises(PolicyTimeoutError):  # the robot loop turns this into a safe stop
        client.act(images={"a": image}, instruction="x")
    server, thread = _serve(port)
    try:
        deadline = time.monotonic() + 5
        while True:  # the client reconnects by itself; the caller only calls again
            try:
                reply = client.act(images={"a": image}, instruction="x")
                break
            except PolicyTimeoutError:
                assert time.monotonic() < deadline
        assert reply.action.shape == (7,)
    finally:
        client.close()
        server.close()
        thread.join(5)


def test_acts_as_a_robot_policy_on_an_observation(start_server, image) -> None:
    server = start_server()
    obs = Observation(images={"primary": image}, proprio=np.zeros(7, np.float32), timestamp=0.0)
    with PolicyClient(server.address) as client:
        reply = client.act(obs, "put the carrot on the plate")
        assert reply.action.shape == (7,) and reply.timing["batch_size"] == 1
        with pytest.raises(ProtocolError, match="either obs or images"):
            client.act(obs, "x", images={"primary": image})
        with pytest.raises(ProtocolError, match="needs images"):
            client.act(instruction="x")


def test_addresses_and_settings_are_checked() -> None:
    assert normalize_address("10.0.0.2:5555") == "tcp://10.0.0.2:5555"
    assert normalize_address("ipc:///tmp/x") == "ipc:///tmp/x"
    with pytest.raises(ProtocolError, match="host:port"):
        normalize_address("localhost")
    with pytest.raises(ProtocolError, match="timeout_s"):
        PolicyClient("127.0.0.1:5555", timeout_s=0)


def test_a_reply_to_another_request_is_dropped_not_returned() -> None:
    import zmq

    from serving import protocol

    # a ROUTER speaking the protocol by hand: it answers a stale id first, then the real one
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def answer() -> None:
        ident, empty, header, *_ = router.recv_multipart()
        rid = protocol.parse_request(protocol.unpack([header])).id
        for reply_id, value in ((rid + 100, 9.0), (rid, 1.0)):
            result = {"action": np.full(7, value, np.float32)}
            router.send_multipart([ident, empty, *protocol.pack_result(reply_id, result, {})])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with PolicyClient(f"127.0.0.1:{port}", timeout_s=5) as client:
        reply = client.act(images={"a": np.zeros((2, 2, 3), np.uint8)}, instruction="x")
    thread.join(5)
    router.close()
    assert reply.action.tolist() == [1.0] * 7
