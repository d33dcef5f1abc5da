"""Fixtures for serving tests: a real PolicyServer on 127.0.0.1 in a thread, and small policies."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from serving.policies import NoopPolicy
from serving.protocol import ActRequest
from serving.server import PolicyServer


class SlowEchoPolicy(NoopPolicy):
    """Takes `delay_s` per batch; action[0] echoes a numeric instruction (so each reply can be
    matched to its request); the instruction "fail" makes the whole batch raise."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(7)
        self.delay_s, self.batches = delay_s, []

    def check(self, request: ActRequest) -> None:
        pass

    def act_batch(self, requests: Sequence[ActRequest]) -> list[dict[str, Any]]:
        self.batches.append(len(requests))
        time.sleep(self.delay_s)
        if any(r.instruction == "fail" for r in requests):
            raise RuntimeError("this policy fails on purpose for the instruction 'fail'")
        return [{"action": np.full(7, float(r.instruction) if r.instruction.isdigit() else -1, np.float32)}
                for r in requests]


@pytest.fixture
def start_server() -> Callable[..., PolicyServer]:
    """Factory: `start_server(policy, **kwargs)` -> a serving PolicyServer, closed after the test."""
    started: list[tuple[PolicyServer, threading.Thread]] = []

    def start(policy: Any = None, **kwargs: Any) -> PolicyServer:
        server = PolicyServer(policy or NoopPolicy(7), host="127.0.0.1", port=kwargs.pop("port", 0), **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "server loop did not stop on close()"


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
