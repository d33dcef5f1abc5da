"""OpenVLA's deploy.py transport: FastAPI + uvicorn, JSON with json-numpy arrays, `requests` client."""
from __future__ import annotations

from typing import Any, Dict

import json_numpy

json_numpy.patch()  # as deploy.py does: every json.dumps/loads in the process handles ndarrays

import numpy as np  # noqa: E402


class NoopServer:
    """deploy.py's OpenVLAServer with the model call replaced by zeros."""

    def predict_action(self, payload: Dict[str, Any]) -> Any:
        from fastapi.responses import JSONResponse

        image, instruction = payload["image"], payload["instruction"]
        unnorm_key = payload.get("unnorm_key", None)  # noqa: F841  (parsed as deploy.py does)
        action = np.zeros(7, np.float32) if image.shape[-1] == 3 and isinstance(instruction, str) else None
        return JSONResponse(action)


def serve(port: int) -> None:
    """`uvicorn.run(app)` with `POST /act`, as deploy.py's `run()` (access log off, in its favour)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    app.post("/act")(NoopServer().predict_action)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Client:
    """The client from deploy.py's docstring: `requests.post(..., json=...).json()`."""

    def __init__(self, port: int) -> None:
        import requests

        self.post, self.url = requests.post, f"http://127.0.0.1:{port}/act"

    def act(self, image: np.ndarray, instruction: str) -> np.ndarray:
        return np.asarray(self.post(self.url, json={"image": image, "instruction": instruction}).json())
