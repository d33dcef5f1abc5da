"""Fixtures for serving tests: a real PolicyServer on 127.0.0.1 in a thread, and small policies."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from serving.policies import NoopPolicy
from serving_fixtures import SlowEchoPolicy  # noqa: F401 (re-exported for tests)
from serving.protocol import ActRequest
from serving.server import PolicyServer


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
