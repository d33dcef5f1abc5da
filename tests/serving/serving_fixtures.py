"""Small policies shared by the serving tests (a plain module: `conftest` names clash across folders)."""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from serving.policies import NoopPolicy
from serving.protocol import ActRequest


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
