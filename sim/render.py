"""Offscreen rendering for MuJoCo scenes on machines without a display.

MuJoCo picks its OpenGL platform from MUJOCO_GL and PyOpenGL from PYOPENGL_PLATFORM, each once
per process, and a failed EGL attempt cannot be undone in-process. Rendering therefore happens in
a child process started per scene with the backend in its environment: MUJOCO_GL when the user
set it, else EGL, then OSMesa (Debian packages in `GL_BACKENDS`, installed by
.ci/system-deps.sh). The first backend that starts is recorded in the two variables, so later
scenes and collection workers go straight to it. `select_gl_backend()` makes the same choice up
front (probing in throwaway processes) for libraries that read MUJOCO_GL when imported (robosuite).
"""
from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import weakref

import numpy as np

from sim.errors import RenderBackendError

log = logging.getLogger(__name__)

# backend -> Debian packages that provide it (also installed by .ci/system-deps.sh)
GL_BACKENDS: dict[str, tuple[str, ...]] = {
    "egl": ("libegl1", "libegl-mesa0", "libgl1-mesa-dri"),
    "osmesa": ("libosmesa6",),
}
def _install_hint() -> str:
    pkgs = sorted({p for ps in GL_BACKENDS.values() for p in ps})
    return f"install the Debian packages: sudo apt-get install -y {' '.join(pkgs)} (or run `make system-deps`)"


_PROBE = """
from mujoco.{name} import GLContext
ctx = GLContext(8, 8); ctx.make_current(); ctx.free()
"""
PROBE_TIMEOUT_S = 60.0


def _probe(name: str) -> str | None:
    """None when `name` can create a context in a fresh process, else the error text."""
    env = {**os.environ, "MUJOCO_GL": name, "PYOPENGL_PLATFORM": name}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE.format(name=name)], env=env, capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"timed out after {PROBE_TIMEOUT_S} s"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def select_gl_backend() -> str:
    """Choose the offscreen backend before a library that reads MUJOCO_GL at import (robosuite) loads.

    MUJOCO_GL set by the user (or by an earlier scene) wins; otherwise EGL, then OSMesa, each
    probed in a fresh process. The choice is recorded in MUJOCO_GL and PYOPENGL_PLATFORM.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen not in GL_BACKENDS:
            raise RenderBackendError(
                f"MUJOCO_GL={chosen!r} cannot render offscreen here; set it to one of {sorted(GL_BACKENDS)} "
                "or unset it to let the scene choose"
            )
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
        return chosen
    failures = {}
    for name in GL_BACKENDS:
        failure = _probe(name)
        if failure is None:
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = name
            log.info("offscreen rendering with MUJOCO_GL=%s (failed before it: %s)", name, failures)
            return name
        failures[name] = failure
    raise RenderBackendError(f"no offscreen OpenGL backend works on this machine ({failures}); {_install_hint()}")


def _context_class(backend: str) -> type:
    if backend == "egl":
        from mujoco.egl import GLContext
    else:
        from mujoco.osmesa import GLContext
    return GLContext


class _GLRenderer:
    """Renders cameras of one model with one GL context; lives only in the render process."""

    def __init__(self, model, height: int, width: int, backend: str) -> None:
        import mujoco

        self._mj = mujoco
        self._ctx = _context_class(backend)(width, height)
        self._ctx.make_current()
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._model = model
        self._scene = mujoco.MjvScene(model, maxgeom=MAX_GEOMS)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._flip = np.empty((height, width, 3), np.uint8)

    def render_into(self, data, camera_id: int, out: np.ndarray) -> None:
        """Draw camera `camera_id` into `out` (uint8 [H, W, 3], top row first)."""
        mj = self._mj
        self._camera.fixedcamid = camera_id
        mj.mjv_updateScene(self._model, data, self._option, None, self._camera, mj.mjtCatBit.mjCAT_ALL, self._scene)
        mj.mjr_render(self._rect, self._scene, self._con)
        mj.mjr_readPixels(self._flip, None, self._rect, self._con)
        out[:] = self._flip[::-1]  # OpenGL's first row is the bottom one

    def free(self) -> None:
        self._con.free()
        self._ctx.free()


# Model fields a scene may change between episodes (camera shift, table texture); sent with the state.
MODEL_FIELDS = ("cam_pos", "cam_quat", "geom_matid", "geom_rgba")
DATA_FIELDS = ("qpos", "mocap_pos", "mocap_quat")
MAX_GEOMS = 500


def _state_vector(model, data) -> np.ndarray:
    parts = [np.asarray(getattr(data, f), np.float64).ravel() for f in DATA_FIELDS]
    parts += [np.asarray(getattr(model, f), np.float64).ravel() for f in MODEL_FIELDS]
    return np.concatenate(parts)


def _load_state(vec: np.ndarray, model, data) -> None:
    at = 0
    for owner, fields in ((data, DATA_FIELDS), (model, MODEL_FIELDS)):
        for f in fields:
            dst = getattr(owner, f)
            dst[...] = vec[at : at + dst.size].reshape(dst.shape).astype(dst.dtype)
            at += dst.size


def _read_exact(stream, n: int) -> bytearray:
    buf = bytearray(n)  # writable, so frames decoded over it are ordinary writable arrays
    view, got = memoryview(buf), 0
    while got < n:
        k = stream.readinto(view[got:])
        if not k:
            raise EOFError(f"pipe closed after {got} of {n} bytes")
        got += k
    return buf


def _serve(mjb_path: str, camera_ids: list[int], height: int, width: int, fd_in: int, fd_out: int) -> None:
    """Render process: rebuild the model, then answer each state with the frames of every camera."""
    import mujoco

    inp, out = os.fdopen(fd_in, "rb", buffering=0), os.fdopen(fd_out, "wb", buffering=0)
    try:
        model = mujoco.MjModel.from_binary_path(mjb_path)
        data = mujoco.MjData(model)
        renderer = _GLRenderer(model, height, width, os.environ["MUJOCO_GL"])
    except Exception as e:  # reported to the parent, which raises it with the install hint
        msg = repr(e).encode()
        out.write(b"e" + len(msg).to_bytes(4, "little") + msg)
        return
    frames = np.empty((len(camera_ids), height, width, 3), np.uint8)
    size = _state_vector(model, data).nbytes
    out.write(b"r")
    try:
        while True:
            _load_state(np.frombuffer(_read_exact(inp, size), np.float64), model, data)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            for i, cam in enumerate(camera_ids):
                renderer.render_into(data, cam, frames[i])
            out.write(b"k" + frames.tobytes())
    except EOFError:  # the parent closed the pipe: done
        pass
    finally:
        renderer.free()


class OffscreenRenderer:
    """Renders named cameras of a model in a child process; returns uint8 [H, W, 3] arrays.

    Why a child process: Mesa's software GL (both EGL and OSMesa here) loads libLLVM into the
    process, and TensorFlow or Triton (pulled in by torch._dynamo) loaded into the same process
    crash it, in either import order. Rendering apart keeps `sim` usable next to the data
    pipeline and the model. The child is a plain `python -m sim.render` (not multiprocessing, so a
    user's script needs no `__main__` guard); only the state (qpos, mocap poses, camera poses,
    materials) goes down the pipe as raw float64 bytes, and raw frames come back.
    """

    def __init__(self, model, height: int, width: int, cameras: dict[str, int]) -> None:
        import mujoco

        limit = (model.vis.global_.offheight, model.vis.global_.offwidth)
        if height > limit[0] or width > limit[1]:
            raise RenderBackendError(
                f"image {height}x{width} exceeds the model's offscreen buffer {limit[0]}x{limit[1]}; "
                "raise <visual><global offwidth/offheight> in the scene XML or ask for smaller images"
            )
        chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
        if chosen and chosen not in GL_BACKENDS:
            select_gl_backend()  # raises, naming the backends that work offscreen
        self.names = list(cameras)
        self.height, self.width = height, width
        self._model = model
        self._frame_bytes = len(cameras) * height * width * 3
        self._tmp = tempfile.TemporaryDirectory(prefix="vla-render-")
        mjb = pathlib.Path(self._tmp.name) / "model.mjb"
        mujoco.mj_saveModel(model, str(mjb), None)
        args = [str(mjb), ",".join(str(c) for c in cameras.values()), str(height), str(width)]
        failures = {}
        # the render process itself is the probe: the first backend that starts is kept
        for backend in [chosen] if chosen else list(GL_BACKENDS):
            status = self._start(backend, args)
            if status == b"r":
                if not chosen:  # later scenes and collection workers skip the backends that failed
                    os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
                    log.info("offscreen rendering with MUJOCO_GL=%s (failed before it: %s)", backend, failures)
                return
            failures[backend] = status.decode(errors="replace")
            self._finalizer()
        self._tmp.cleanup()
        raise RenderBackendError(f"no offscreen OpenGL backend works on this machine ({failures}); {_install_hint()}")

    def _start(self, backend: str, args: list[str]) -> bytes:
        """Start the render process on `backend`; its first status byte (b"r" when ready) or error."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sim.render", *args, str(down_r), str(up_w)],
            pass_fds=(down_r, up_w),
            stdin=subprocess.DEVNULL,
            cwd=pathlib.Path(__file__).resolve().parents[1],
            env={**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend},
        )
        os.close(down_r)
        os.close(up_w)
        self._down = os.fdopen(down_w, "wb", buffering=0)
        self._up = os.fdopen(up_r, "rb", buffering=0)
        self._finalizer = weakref.finalize(self, _shutdown, self._down, self._up, self._proc)
        return self._status()

    def _status(self) -> bytes:
        try:
            code = _read_exact(self._up, 1)
            if code == b"e":
                n = int.from_bytes(_read_exact(self._up, 4), "little")
                return bytes(_read_exact(self._up, n))
            return bytes(code)
        except EOFError:
            return b"the render process died (exit code %r)" % (self._proc.poll(),)

    def render(self, data) -> dict[str, np.ndarray]:
        """Every camera's frame for the state in `data` (fresh arrays, safe to keep)."""
        try:
            self._down.write(_state_vector(self._model, data).tobytes())
        except (BrokenPipeError, ValueError) as e:
            raise RenderBackendError(f"the render process is gone (exit code {self._proc.poll()}): {e}") from e
        status = self._status()
        if status != b"k":
            raise RenderBackendError(f"rendering failed: {status!r}")
        frames = np.frombuffer(_read_exact(self._up, self._frame_bytes), np.uint8)
        frames = frames.reshape(len(self.names), self.height, self.width, 3)
        return {name: frames[i] for i, name in enumerate(self.names)}

    def close(self) -> None:
        """Stop the render process."""
        self._finalizer()
        self._tmp.cleanup()


RENDER_TIMEOUT_S = 60


def _shutdown(down, up, proc) -> None:
    down.close()  # EOF tells the child to exit
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    up.close()


if __name__ == "__main__":  # the render process started by OffscreenRenderer
    _mjb, _ids, _h, _w, _fd_in, _fd_out = sys.argv[1:7]
    _serve(_mjb, [int(c) for c in _ids.split(",")], int(_h), int(_w), int(_fd_in), int(_fd_out))
