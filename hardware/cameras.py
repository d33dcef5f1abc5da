"""Cameras of a real rig behind the `robot.Camera` protocol: OpenCV (USB/V4L2 or a video file) and RealSense.

A config builds its camera; the SDK (cv2, pyrealsense2) is imported only then. Every frame is
RGB uint8 [H, W, 3] at the configured size; a device that delivers another size is an error, not
a silent resize, because the policy was trained on one field of view.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import time

import numpy as np

from hardware.errors import CameraError
from robot.types import CAMERA_ROLES, CameraSpec

log = logging.getLogger(__name__)

OPEN_ATTEMPTS_S = 2.0  # a USB camera can need a moment after open before the first frame


@dataclasses.dataclass(frozen=True)
class Frame:
    """One image and when it was taken (time.monotonic seconds)."""

    image: np.ndarray
    timestamp: float


@dataclasses.dataclass(frozen=True)
class OpenCVCameraConfig:
    """A camera OpenCV can open: a device index (/dev/videoN), a device path, or a video file."""

    name: str  # camera name in observations, e.g. "over_shoulder"
    source: str = "0"  # "0" -> /dev/video0; "/dev/video2"; or a path to a video file
    role: str = "primary"  # primary (third person), secondary or wrist
    width: int = 640
    height: int = 480
    fps: float = 30.0
    loop: bool = False  # for a video file: start over at the end instead of raising

    def __post_init__(self) -> None:
        _check_camera(self.name, self.role, self.width, self.height, self.fps)

    def spec(self) -> CameraSpec:
        """The CameraSpec a robot advertises for this camera."""
        return CameraSpec(name=self.name, role=self.role, height=self.height, width=self.width)

    def make(self) -> OpenCVCamera:
        """Open the camera."""
        return OpenCVCamera(self)


@dataclasses.dataclass(frozen=True)
class RealSenseCameraConfig:
    """An Intel RealSense colour stream (pyrealsense2, the `realsense` extra)."""

    name: str
    serial: str = ""  # empty: the first device found
    role: str = "primary"
    width: int = 640
    height: int = 480
    fps: int = 30

    def __post_init__(self) -> None:
        _check_camera(self.name, self.role, self.width, self.height, self.fps)

    def spec(self) -> CameraSpec:
        """The CameraSpec a robot advertises for this camera."""
        return CameraSpec(name=self.name, role=self.role, height=self.height, width=self.width)

    def make(self) -> RealSenseCamera:
        """Open the camera."""
        return RealSenseCamera(self)


def _check_camera(name: str, role: str, width: int, height: int, fps: float) -> None:
    if role not in CAMERA_ROLES:
        raise CameraError(f"camera {name!r} has role {role!r}; use one of {CAMERA_ROLES}")
    if width <= 0 or height <= 0 or fps <= 0:
        raise CameraError(f"camera {name!r}: width, height and fps must be > 0, got {width}x{height}@{fps}")


CameraConfig = OpenCVCameraConfig | RealSenseCameraConfig
# camera kind -> config class (the CLI's `--camera KIND:NAME:SOURCE` picks by key)
CAMERA_KINDS: dict[str, type] = {"opencv": OpenCVCameraConfig, "realsense": RealSenseCameraConfig}


class OpenCVCamera:
    """`robot.Camera` over cv2.VideoCapture; returns RGB frames."""

    def __init__(self, config: OpenCVCameraConfig):
        import cv2

        self.config, self.name = config, config.name
        self._cv2 = cv2
        source: int | str = int(config.source) if config.source.isdigit() else config.source
        self._is_file = isinstance(source, str) and pathlib.Path(source).is_file()
        if isinstance(source, str) and not self._is_file and not source.startswith("/dev/"):
            raise CameraError(f"camera {config.name!r}: source {source!r} is neither a device nor an existing "
                              "video file; pass a device index (0), a /dev/videoN path or a video file path")
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise CameraError(
                f"camera {config.name!r}: cannot open {source!r}. Check it is plugged in (`ls /dev/video*`), "
                "that no other program holds it, and that this user may read it (group video)")
        if not self._is_file:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            self._cap.set(cv2.CAP_PROP_FPS, config.fps)
        log.info("opened camera %s on %s", config.name, source)

    def read_frame(self) -> Frame:
        """The next frame with its timestamp."""
        deadline = time.monotonic() + OPEN_ATTEMPTS_S
        while True:
            ok, bgr = self._cap.read()
            if ok:
                break
            if self._is_file and self.config.loop:
                self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = self._cap.read()
                if ok:
                    break
            if self._is_file:
                raise CameraError(f"camera {self.name!r}: video file {self.config.source} has no more frames; "
                                  "set loop=True to replay it")
            if time.monotonic() > deadline:
                raise CameraError(f"camera {self.name!r} ({self.config.source}) delivered no frame for "
                                  f"{OPEN_ATTEMPTS_S} s; check the cable and that no other program uses it")
        stamp = time.monotonic()
        h, w = bgr.shape[:2]
        if (h, w) != (self.config.height, self.config.width):
            raise CameraError(
                f"camera {self.name!r} delivers {w}x{h} but is configured for {self.config.width}x{self.config.height}; "
                f"set width={w} height={h} (or pick a mode the device supports)")
        return Frame(self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB), stamp)

    def read(self) -> np.ndarray:
        """The next RGB frame, uint8 [H, W, 3]."""
        return self.read_frame().image

    def close(self) -> None:
        """Release the device."""
        self._cap.release()


class RealSenseCamera:
    """`robot.Camera` over pyrealsense2's colour stream."""

    def __init__(self, config: RealSenseCameraConfig):
        try:
            import pyrealsense2 as rs
        except ImportError as e:
            raise CameraError(
                f"camera {config.name!r} is a RealSense but pyrealsense2 is not installed; "
                "`pip install pyrealsense2` (x86_64/aarch64 Linux wheels) or use an OpenCV camera") from e
        self.config, self.name = config, config.name
        self._pipeline = rs.pipeline()
        rs_config = rs.config()
        if config.serial:
            rs_config.enable_device(config.serial)
        rs_config.enable_stream(rs.stream.color, config.width, config.height, rs.format.rgb8, config.fps)
        try:
            self._pipeline.start(rs_config)
        except RuntimeError as e:
            raise CameraError(
                f"camera {config.name!r}: RealSense {config.serial or '(any)'} cannot stream "
                f"{config.width}x{config.height}@{config.fps}: {e}. Check it is on a USB 3 port "
                "(`rs-enumerate-devices`) and the mode exists") from e

    def read_frame(self) -> Frame:
        """The next frame with its timestamp."""
        frames = self._pipeline.wait_for_frames()
        color = frames.get_color_frame()
        return Frame(np.asanyarray(color.get_data()).copy(), time.monotonic())

    def read(self) -> np.ndarray:
        """The next RGB frame, uint8 [H, W, 3]."""
        return self.read_frame().image

    def close(self) -> None:
        """Stop streaming."""
        self._pipeline.stop()


def open_cameras(configs: tuple[CameraConfig, ...]) -> dict[str, OpenCVCamera | RealSenseCamera]:
    """Open every configured camera (closing those already opened if one fails)."""
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise CameraError(f"camera names repeat: {names}; give each camera its own name")
    opened: dict[str, OpenCVCamera | RealSenseCamera] = {}
    try:
        for config in configs:
            opened[config.name] = config.make()
    except Exception:
        for cam in opened.values():
            cam.close()
        raise
    return opened


def parse_camera(text: str) -> CameraConfig:
    """A camera from `ROLE=SOURCE[@WIDTHxHEIGHT]`; SOURCE is 0, /dev/videoN, a video file, or realsense[:SERIAL].

    The camera is named after its role (`primary`, `secondary`, `wrist`).
    """
    role, sep, rest = text.partition("=")
    if not sep or not role or not rest:
        raise CameraError(f"camera {text!r} must look like ROLE=SOURCE[@WIDTHxHEIGHT], e.g. primary=0@640x480, "
                          "wrist=/dev/video2 or primary=realsense:123456789012")
    source, _, size = rest.partition("@")
    sizes = {}
    if size:
        width, x, height = size.partition("x")
        if not (x and width.isdigit() and height.isdigit()):
            raise CameraError(f"camera {text!r}: size {size!r} must be WIDTHxHEIGHT, e.g. 640x480")
        sizes = {"width": int(width), "height": int(height)}
    if source == "realsense" or source.startswith("realsense:"):
        return RealSenseCameraConfig(name=role, serial=source.partition(":")[2], role=role, **sizes)
    return OpenCVCameraConfig(name=role, source=source, role=role, **sizes)
