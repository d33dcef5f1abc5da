"""openpi's serving transport: a websockets server speaking msgpack-numpy, openpi-client as client."""
from __future__ import annotations

import asyncio
import time

import numpy as np


class NoopPolicy:
    """openpi's BasePolicy with zeros for actions."""

    def infer(self, obs: dict) -> dict:
        assert obs["observation/image"].shape[-1] == 3  # touch the payload as a policy would
        return {"actions": np.zeros(7, np.float32)}


async def _handler(websocket, policy: NoopPolicy) -> None:
    # openpi's WebsocketPolicyServer._handler: metadata first, then recv -> infer -> send, with timing
    import websockets
    from openpi_client import msgpack_numpy

    packer = msgpack_numpy.Packer()
    await websocket.send(packer.pack({}))
    prev_total_time = None
    while True:
        try:
            start_time = time.monotonic()
            obs = msgpack_numpy.unpackb(await websocket.recv())
            infer_time = time.monotonic()
            action = policy.infer(obs)
            infer_time = time.monotonic() - infer_time
            action["server_timing"] = {"infer_ms": infer_time * 1000}
            if prev_total_time is not None:
                action["server_timing"]["prev_total_ms"] = prev_total_time * 1000
            await websocket.send(packer.pack(action))
            prev_total_time = time.monotonic() - start_time
        except websockets.ConnectionClosed:
            break


def serve(port: int) -> None:
    """`websockets.asyncio.server.serve(..., compression=None, max_size=None)` as openpi does."""
    import websockets.asyncio.server

    async def main() -> None:
        policy = NoopPolicy()
        async with websockets.asyncio.server.serve(
            lambda ws: _handler(ws, policy), "127.0.0.1", port, compression=None, max_size=None
        ) as server:
            await server.serve_forever()

    asyncio.run(main())


class Client:
    """openpi-client's WebsocketClientPolicy (the PyPI package robots install)."""

    def __init__(self, port: int) -> None:
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        self.policy = WebsocketClientPolicy(host="127.0.0.1", port=port)

    def act(self, image: np.ndarray, instruction: str) -> np.ndarray:
        return self.policy.infer({"observation/image": image, "prompt": instruction})["actions"]
