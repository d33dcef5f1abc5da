"""The floor: a bare pyzmq DEALER/ROUTER round trip of the same bytes, nothing else on the path."""
from __future__ import annotations

import numpy as np
import zmq

ACTION = np.zeros(7, np.float32).tobytes()


def serve(port: int) -> None:
    """Echo a 7-float reply to every request until killed."""
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        ident, empty, _instruction, _image = sock.recv_multipart()
        sock.send_multipart([ident, empty, ACTION])


class Client:
    """Sends instruction and image as two frames; reads the 7 floats back."""

    def __init__(self, port: int) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def act(self, image: np.ndarray, instruction: str) -> np.ndarray:
        self.sock.send_multipart([b"", instruction.encode(), image])
        return np.frombuffer(self.sock.recv_multipart()[1], np.float32)
