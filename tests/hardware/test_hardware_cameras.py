"""Cameras: the OpenCV path on a real video file; clear errors for missing devices and SDKs."""
from __future__ import annotations

import numpy as np
import pytest

from hardware.cameras import OpenCVCameraConfig, RealSenseCameraConfig, open_cameras, parse_camera
from hardware.errors import CameraError
from robot.protocols import Camera

cv2 = pytest.importorskip("cv2")
H, W, FRAMES = 48, 64, 5


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for i in range(FRAMES):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[..., 2] = 40 * i  # BGR: red grows frame by frame
        writer.write(frame)
    writer.release()
    return path


def test_video_file_frames_are_rgb_with_timestamps(video):
    cam = OpenCVCameraConfig("front", str(video), width=W, height=H).make()
    assert isinstance(cam, Camera)
    frames = [cam.read_frame() for _ in range(FRAMES)]
    cam.close()
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    reds = [int(f.image[..., 0].mean()) for f in frames]
    assert reds == sorted(reds) and reds[-1] > reds[0] + 100  # channel 0 is red after conversion
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))


def test_end_of_file_raises_unless_looping(video):
    cam = OpenCVCameraConfig("front", str(video), width=W, height=H).make()
    for _ in range(FRAMES):
        cam.read()
    with pytest.raises(CameraError, match="loop=True"):
        cam.read()
    cam.close()
    looping = OpenCVCameraConfig("front", str(video), width=W, height=H, loop=True).make()
    assert [looping.read().shape for _ in range(FRAMES + 2)][-1] == (H, W, 3)
    looping.close()


def test_size_mismatch_is_an_error_not_a_resize(video):
    cam = OpenCVCameraConfig("front", str(video), width=640, height=480).make()
    with pytest.raises(CameraError, match=f"delivers {W}x{H}.*width={W} height={H}"):
        cam.read()
    cam.close()


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(CameraError, match="neither a device nor an existing video file"):
        OpenCVCameraConfig("front", str(tmp_path / "nope.mp4")).make()
    with pytest.raises(CameraError, match="cannot open '/dev/video97'"):
        OpenCVCameraConfig("front", "/dev/video97").make()


def test_realsense_without_sdk_says_what_to_install():
    try:
        import pyrealsense2  # noqa: F401
        pytest.skip("pyrealsense2 is installed here")
    except ImportError:
        pass
    with pytest.raises(CameraError, match="pip install pyrealsense2"):
        RealSenseCameraConfig("wrist").make()


def test_repeated_names_are_refused(video):
    config = OpenCVCameraConfig("front", str(video), width=W, height=H)
    with pytest.raises(CameraError, match="names repeat"):
        open_cameras((config, config))


def test_camera_spec_carries_role_and_size():
    spec = OpenCVCameraConfig("wrist_cam", "0", role="wrist", width=W, height=H).spec()
    assert (spec.name, spec.role, spec.height, spec.width) == ("wrist_cam", "wrist", H, W)


def test_camera_option_parsing():
    cam = parse_camera("wrist=/dev/video2@320x240")
    assert (cam.name, cam.role, cam.source, cam.width, cam.height) == ("wrist", "wrist", "/dev/video2", 320, 240)
    rs = parse_camera("primary=realsense:0123")
    assert isinstance(rs, RealSenseCameraConfig) and rs.serial == "0123"
    with pytest.raises(CameraError, match="ROLE=SOURCE"):
        parse_camera("/dev/video0")
    with pytest.raises(CameraError, match="WIDTHxHEIGHT"):
        parse_camera("primary=0@big")
    with pytest.raises(CameraError, match="role 'top'"):
        parse_camera("top=0")
