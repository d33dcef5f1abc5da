"""Tiny video files that stand in for a camera in hardware tests."""
from __future__ import annotations

import pathlib

import numpy as np


def write_clip(path: pathlib.Path, width: int, height: int, frames: int = 8) -> pathlib.Path:
    """An MJPG .avi whose frames brighten one by one."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    for i in range(frames):
        writer.write(np.full((height, width, 3), 30 * i, np.uint8))
    writer.release()
    return path
