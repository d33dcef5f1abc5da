"""A served policy for runner tests: a fixed small step forward, optionally hanging like a wedged model."""
from __future__ import annotations

import threading
import time

import numpy as np
from serving.policies import NoopPolicy
from serving.server import PolicyServer

STEP = np.array([0.005, 0, 0, 0, 0, 0, 1.0], np.float32)  # +5 mm in x, gripper open


class StepPolicy(NoopPolicy):
    """Answers STEP; after `hang_after` calls each answer takes longer than any client waits."""

    def __init__(self, hang_after: int | None = None):
        super().__init__(7)
        self.calls, self.hang_after = 0, hang_after

    def act_batch(self, requests):
        self.calls += len(requests)
        if self.hang_after is not None and self.calls > self.hang_after:
            time.sleep(1.0)  # longer than the clients in these tests wait (0.5 s)
        return [{"action": STEP.copy()} for _ in requests]


def serve(policy) -> tuple[PolicyServer, threading.Thread]:
    """A real PolicyServer on 127.0.0.1 (OS-chosen port) in a thread."""
    server = PolicyServer(policy, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
