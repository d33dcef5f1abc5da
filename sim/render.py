"""Offscreen rendering for MuJoCo scenes on machines without a display.

MuJoCo picks its OpenGL platform from MUJOCO_GL when `mujoco` is first imported, and PyOpenGL
from PYOPENGL_PLATFORM when OpenGL is first imported, so the backend must be chosen before
either: `select_gl_backend()` does that (probing each candidate in a child process, because a
failed EGL attempt cannot be undone in-process) and records the choice in the two variables,
which child processes (collection workers) inherit. The renderer below creates its GL context
from the chosen backend directly, so it works even when `mujoco` was imported earlier.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import subprocess
import sys
import weakref

import numpy as np

from sim.errors import RenderBackendError

log = logging.getLogger(__name__)

# backend -> Debian packages that provide it (also installed by .ci/system-deps.sh)
GL_BACKENDS: dict[str, tuple[str, ...]] = {
    "egl": ("libegl1", "libegl-mesa0", "libgl1-mesa-dri"),
    "osmesa": ("libosmesa6",),
}
_PROBE = """
import sys
from mujoco.{name} import GLContext
ctx = GLContext(8, 8); ctx.make_current(); ctx.free()
"""
PROBE_TIMEOUT_S = 60.0


def _probe(name: str) -> str | None:
    """None when `name` can create a context in a fresh process, else the error text."""
    env = {**os.environ, "MUJOCO_GL": name, "PYOPENGL_PLATFORM": name}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE.format(name=name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {PROBE_TIMEOUT_S} s"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _install_hint() -> str:
    pkgs = sorted({p for ps in GL_BACKENDS.values() for p in ps})
    return f"install the Debian packages: sudo apt-get install -y {' '.join(pkgs)} (or run `make system-deps`)"


def select_gl_backend() -> str:
    """Choose the offscreen GL backend (MUJOCO_GL if the user set it, else EGL, then OSMesa) and return it."""
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
            log.info("offscreen rendering with MUJOCO_GL=%s (tried %s first: %s)", name, list(failures), failures)
            return name
        failures[name] = failure
    raise RenderBackendError(
        f"no offscreen OpenGL backend works on this machine ({failures}); {_install_hint()}"
    )


def _context_class(backend: str) -> type:
    if backend == "egl":
        from mujoco.egl import GLContext
    else:
        from mujoco.osmesa import GLContext
    return GLContext


class OffscreenRenderer:
    """Renders named cameras of one model into uint8 [H, W, 3] arrays with one GL context."""

    def __init__(self, model, height: int, width: int) -> None:
        import mujoco

        self._mujoco = mujoco
        backend = select_gl_backend()
        limit = (model.vis.global_.offheight, model.vis.global_.offwidth)
        if height > limit[0] or width > limit[1]:
            raise RenderBackendError(
                f"image {height}x{width} exceeds the model's offscreen buffer {limit[0]}x{limit[1]}; "
                "raise <visual><global offwidth/offheight> in the scene XML or ask for smaller images"
            )
        try:
            self._ctx = _context_class(backend)(width, height)
            self._ctx.make_current()
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception as e:  # the GL stack's own errors say little; name the fix
            raise RenderBackendError(f"creating a {backend} GL context failed ({e!r}); {_install_hint()}") from e
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._model = model
        self._scene = mujoco.MjvScene(model, maxgeom=200)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self.height, self.width = height, width
        # free the context before the GL library's own exit handler tears the display down
        self._atexit = functools.partial(_close_if_alive, weakref.ref(self))
        atexit.register(self._atexit)

    def render(self, data, camera_id: int) -> np.ndarray:
        """One frame from camera `camera_id`, top row first."""
        mj = self._mujoco
        self._ctx.make_current()
        self._camera.fixedcamid = camera_id
        mj.mjv_updateScene(self._model, data, self._option, None, self._camera, mj.mjtCatBit.mjCAT_ALL, self._scene)
        mj.mjr_render(self._rect, self._scene, self._con)
        out = np.empty((self.height, self.width, 3), np.uint8)
        mj.mjr_readPixels(out, None, self._rect, self._con)
        return out[::-1].copy()  # OpenGL's first row is the bottom one

    def close(self) -> None:
        """Free the GL resources."""
        if self._con is not None:
            self._con.free()
            self._ctx.free()
            self._con = None
            atexit.unregister(self._atexit)


def _close_if_alive(ref: weakref.ref) -> None:
    renderer = ref()
    if renderer is not None:
        renderer.close()
