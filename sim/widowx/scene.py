"""The WidowX 250 tabletop scene: a `robot.Robot` driven by 7-dim end-effector deltas at 5 Hz.

Each action moves the mocap target (welded to the end effector) from the current end-effector
pose by the commanded delta, interpolated over the control period; the gripper entry is the
finger servo's target (1 = open, 0 = closed), as in Bridge data.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import pathlib

import numpy as np

from robot import CameraSpec, EmbodimentSpec, Observation, SafetyFilter, SafetyLimits, StepResult, resolve_rig
from sim.config import SceneOptions
from sim.errors import SceneOptionError
from sim.perturbations import shifted_camera_pose, table_spots

log = logging.getLogger(__name__)

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "widowx250"
SCENE_XML = ASSETS / "scene_tabletop.xml"

CONTROL_HZ = 5.0  # Bridge V2 WidowX data is recorded at 5 Hz
# per-step bounds: Bridge's action range as V-GPS normalizes it (+-0.05 m, +-0.25 rad, gripper [0, 1])
MAX_TRANSLATION = 0.05
MAX_ROTATION = 0.25
WORKSPACE_LOW = (0.12, -0.28, 0.02)  # end-effector box (m): fingertips stay above the table
WORKSPACE_HIGH = (0.46, 0.28, 0.30)
HOME_EE = (0.22, 0.0, 0.16)  # start pose of the end effector, gripper pointing down
FINGER_CLOSED, FINGER_OPEN = 0.015, 0.037  # wx250s finger slide range (m), see widowx250.xml
MOVE_FRACTION = 0.6  # share of the control period over which the target moves; the rest settles
SETTLE_STEPS = 300  # physics steps to bring the arm to HOME_EE when the scene is built
BLOCK_HALF = 0.015
BOWL_INNER_RADIUS = 0.06
PARKED = (5.0, -5.0, 0.0)  # where unused objects wait, outside every camera
# camera name in the robot's spec -> (MJCF camera, role)
CAMERAS = {"shoulder": ("shoulder", "primary"), "wrist": ("widowx250/wrist", "wrist")}
REST_STEPS = 10  # physics steps after placing objects, so the block rests on the table
IN_BOWL_MAX_Z = 0.04  # block centre below the bowl rim (0.044 m): in the bowl, not held above it
ON_TABLE_MAX_Z = 0.03  # push_left: the block was pushed, not lifted
HOME_TOLERANCE = 0.005  # m: the settled arm must be this close to HOME_EE
PLACEMENT_TRIES = 1000  # rejection-sampling attempts for non-overlapping objects
DISTRACTOR_X, DISTRACTOR_Y = (0.18, 0.42), (-0.22, 0.22)  # table area for distractors (m)
DISTRACTOR_CLEARANCE = 0.09  # m between a distractor and any other object's centre
# start joint angles from which the weld pulls the arm to HOME_EE (shoulder, elbow, wrist angle; rad)
SETTLE_START = {"widowx250/shoulder": -0.5, "widowx250/elbow": 0.5, "widowx250/wrist_angle": 1.5}
TABLE_TEXTURES = ("wood", "checker", "gradient", "speckle")  # materials table/<name> in the XML
MAX_DISTRACTORS = 3
WIDOWX_LIMITS = SafetyLimits(WORKSPACE_LOW, WORKSPACE_HIGH, MAX_TRANSLATION, MAX_ROTATION)
TOP_DOWN = np.array([math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0])  # gripper axis along -z


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def quat_from_rpy(rpy: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) of extrinsic roll-pitch-yaw (x, then y, then z, fixed axes)."""
    r, p, y = (float(v) / 2 for v in rpy)
    qx = np.array([math.cos(r), math.sin(r), 0, 0])
    qy = np.array([math.cos(p), 0, math.sin(p), 0])
    qz = np.array([math.cos(y), 0, 0, math.sin(y)])
    return _quat_mul(qz, _quat_mul(qy, qx))


def rpy_from_quat(q: np.ndarray) -> np.ndarray:
    """Extrinsic roll-pitch-yaw of quaternion `q` (inverse of `quat_from_rpy`)."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def _conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo camera quaternion at `pos` looking at `target` with world z up."""
    import mujoco

    fwd = target - pos
    fwd = fwd / np.linalg.norm(fwd)
    x = np.cross(fwd, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    mat = np.stack([x, y, -fwd], axis=1)  # camera looks along its -z
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, mat.ravel())
    return q


def widowx_spec(options: SceneOptions) -> EmbodimentSpec:
    """The embodiment of the scene for `options` (its cameras are the rig's)."""
    size = options.image_size
    full = EmbodimentSpec(
        name="widowx250-sim",
        control_hz=CONTROL_HZ,
        action_low=(-MAX_TRANSLATION,) * 3 + (-MAX_ROTATION,) * 3 + (0.0,),
        action_high=(MAX_TRANSLATION,) * 3 + (MAX_ROTATION,) * 3 + (1.0,),
        cameras=tuple(CameraSpec(name, role, size, size) for name, (_, role) in CAMERAS.items()),
        proprio_names=("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw", "gripper_open"),
    )
    rig = resolve_rig(options.rig, full)
    used = set(rig.cameras.values()) if options.render_images else set()
    return dataclasses.replace(full, cameras=tuple(c for c in full.cameras if c.name in used))


class WidowXScene:
    """WidowX 250 on a table with a red block (and a bowl); implements `robot.Robot`."""

    def __init__(self, task, options: SceneOptions = SceneOptions(), seed: int | None = None) -> None:
        import mujoco

        from sim.render import OffscreenRenderer

        self._mj = mujoco
        self.task, self.options = task, options
        self.spec = widowx_spec(options)
        if options.table_texture is not None and options.table_texture not in TABLE_TEXTURES:
            raise SceneOptionError(
                f"table texture {options.table_texture!r} is unknown; textures: {TABLE_TEXTURES}"
            )
        if options.distractors > MAX_DISTRACTORS:
            raise SceneOptionError(f"the WidowX scene has {MAX_DISTRACTORS} distractors; asked for {options.distractors}")
        self.model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._ee = m.body("widowx250/ee").id
        self._target = m.body_mocapid[m.body("widowx250/target").id]
        self._bowl = m.body_mocapid[m.body("bowl").id]
        self._distractors = [m.body_mocapid[m.body(f"distractor{i}").id] for i in range(MAX_DISTRACTORS)]
        self._block_qpos = m.jnt_qposadr[m.joint("block").id]
        self._block_body = m.body("block").id
        self._finger_qpos = m.jnt_qposadr[m.joint("widowx250/left_finger").id]
        self._shoulder_cam = m.camera("shoulder").id
        self._cam_pose0 = (m.cam_pos[self._shoulder_cam].copy(), m.cam_quat[self._shoulder_cam].copy())
        self._table = m.geom("table").id
        if options.table_texture is not None:
            m.geom_matid[self._table] = m.material(f"table/{options.table_texture}").id
        self._substeps = round(1.0 / (CONTROL_HZ * m.opt.timestep))
        self._safety = SafetyFilter(WIDOWX_LIMITS, log_level=logging.DEBUG)
        cameras = {c.name: m.camera(CAMERAS[c.name][0]).id for c in self.spec.cameras}
        size = options.image_size
        self._renderer = OffscreenRenderer(m, size, size, cameras) if cameras else None
        self._home_qpos = self._settle_home()
        self._rng = np.random.default_rng(seed)
        self.block_start = np.zeros(3)
        self.reset(seed)

    # -- privileged state, for experts and success checks -----------------------------------
    @property
    def ee_pos(self) -> np.ndarray:
        """End-effector (fingertip centre) position, metres."""
        return self.data.xpos[self._ee].copy()

    @property
    def ee_quat(self) -> np.ndarray:
        return self.data.xquat[self._ee].copy()

    @property
    def block_pos(self) -> np.ndarray:
        """Red block centre, metres."""
        return self.data.qpos[self._block_qpos : self._block_qpos + 3].copy()

    @property
    def bowl_pos(self) -> np.ndarray:
        """Bowl centre on the table, metres."""
        return self.data.mocap_pos[self._bowl].copy()

    @property
    def gripper_open(self) -> float:
        """Finger opening in [0, 1] (1 = fully open)."""
        q = self.data.qpos[self._finger_qpos]
        return float((q - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED))

    # -- robot.Robot ------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        """New episode: home pose, objects placed from `seed` (or the scene's own generator)."""
        mj, m, d = self._mj, self.model, self.data
        episode_seed = int(self._rng.integers(2**31)) if seed is None else int(seed)
        rng = np.random.default_rng(episode_seed)
        mj.mj_resetData(m, d)
        d.qpos[:] = self._home_qpos
        d.mocap_pos[self._target] = HOME_EE
        d.mocap_quat[self._target] = TOP_DOWN
        d.ctrl[0] = FINGER_OPEN
        block, bowl = self._place_objects(rng)
        d.qpos[self._block_qpos : self._block_qpos + 3] = block
        d.qpos[self._block_qpos + 3 : self._block_qpos + 7] = (1, 0, 0, 0)
        d.mocap_pos[self._bowl] = bowl
        self._place_distractors(rng, block, bowl)
        self._shift_camera(episode_seed)
        mj.mj_forward(m, d)
        for _ in range(REST_STEPS):
            mj.mj_step(m, d)
        self.block_start = self.block_pos
        self.episode_seed = episode_seed
        return self.observe()

    def observe(self) -> Observation:
        """Render the rig's cameras and read the proprio."""
        images = self._renderer.render(self.data) if self._renderer is not None else {}
        return Observation(images, self._proprio(), float(self.data.time), {"episode_seed": self.episode_seed})

    def act(self, action: np.ndarray) -> StepResult:
        """Move by one end-effector delta for 1/5 s; clamps (workspace, step size) are reported in info."""
        mj, m, d = self._mj, self.model, self.data
        ee = self.ee_pos
        safe, report = self._safety(action, ee)  # raises on NaN / wrong shape before anything moves
        start_pos, start_quat = d.mocap_pos[self._target].copy(), d.mocap_quat[self._target].copy()
        goal_pos = ee + safe[:3]
        goal_quat = _quat_mul(quat_from_rpy(safe[3:6]), self.ee_quat)
        d.ctrl[0] = FINGER_CLOSED + safe[6] * (FINGER_OPEN - FINGER_CLOSED)
        moving = max(1, int(self._substeps * MOVE_FRACTION))
        for i in range(self._substeps):
            if i < moving:
                a = (i + 1) / moving
                d.mocap_pos[self._target] = (1 - a) * start_pos + a * goal_pos
                q = (1 - a) * start_quat * np.sign(np.dot(start_quat, goal_quat)) + a * goal_quat
                d.mocap_quat[self._target] = q / np.linalg.norm(q)
            mj.mj_step(m, d)
        success = self.success()
        info = {"safety": report, "clamped": report.clamped}
        return StepResult(self.observe(), float(success), False, success, info)

    def close(self) -> None:
        """Free the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- task -------------------------------------------------------------------------------
    def success(self) -> bool:
        """Whether the task's goal holds now."""
        block, goal = self.block_pos, self.task.goal
        if goal == "block_in_bowl":
            inside = np.linalg.norm(block[:2] - self.bowl_pos[:2]) < BOWL_INNER_RADIUS - BLOCK_HALF
            return bool(inside and block[2] < IN_BOWL_MAX_Z)
        if goal == "push_left":
            return bool(block[1] - self.block_start[1] >= self.task.push_distance and block[2] < ON_TABLE_MAX_Z)
        return bool(block[2] - BLOCK_HALF >= self.task.lift_height)  # pick_block

    # -- internals --------------------------------------------------------------------------
    def _proprio(self) -> np.ndarray:
        rel = _quat_mul(self.ee_quat, _conj(TOP_DOWN))  # orientation relative to pointing down
        return np.concatenate([self.ee_pos, rpy_from_quat(rel), [self.gripper_open]]).astype(np.float32)

    def _settle_home(self) -> np.ndarray:
        """Joint angles that put the end effector at HOME_EE pointing down (found once, by physics)."""
        mj, m, d = self._mj, self.model, self.data
        mj.mj_resetData(m, d)
        for joint, angle in SETTLE_START.items():
            d.qpos[m.jnt_qposadr[m.joint(joint).id]] = angle
        d.qpos[self._finger_qpos : self._finger_qpos + 2] = (FINGER_OPEN, -FINGER_OPEN)
        d.mocap_pos[self._target] = HOME_EE
        d.mocap_quat[self._target] = TOP_DOWN
        d.mocap_pos[self._bowl] = PARKED
        d.qpos[self._block_qpos : self._block_qpos + 3] = PARKED
        d.ctrl[0] = FINGER_OPEN
        for _ in range(SETTLE_STEPS):
            mj.mj_step(m, d)
        err = np.linalg.norm(d.xpos[self._ee] - HOME_EE)
        if err > HOME_TOLERANCE:
            raise SceneOptionError(f"the arm did not reach its home pose (off by {err:.4f} m); the scene XML is broken")
        return d.qpos.copy()

    def _place_objects(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        t = self.task
        block = np.array([rng.uniform(*t.block_x), rng.uniform(*t.block_y), BLOCK_HALF])
        if not t.uses_bowl:
            return block, np.array(PARKED)
        for _ in range(PLACEMENT_TRIES):
            bowl = np.array([rng.uniform(*t.bowl_x), rng.uniform(*t.bowl_y), 0.0])
            if np.linalg.norm(bowl[:2] - block[:2]) >= t.min_separation:
                return block, bowl
        raise SceneOptionError(
            f"cannot place the bowl {t.min_separation} m from the block within the ranges {t.bowl_x}, {t.bowl_y}"
        )

    def _place_distractors(self, rng: np.random.Generator, block: np.ndarray, bowl: np.ndarray) -> None:
        n = self.options.distractors
        spots = table_spots(rng, DISTRACTOR_X, DISTRACTOR_Y, [block[:2], bowl[:2]], n, DISTRACTOR_CLEARANCE,
                            PLACEMENT_TRIES)
        for i, mocap in enumerate(self._distractors):
            self.data.mocap_pos[mocap] = (*spots[i], 0.0) if i < n else (PARKED[0], PARKED[1] - 1 - i, 0.0)

    def _shift_camera(self, episode_seed: int) -> None:
        """Move and turn the shoulder camera by the configured magnitudes, direction from the seed."""
        pos, quat = self._cam_pose0
        if self.options.camera_shift is not None:
            pos, quat = shifted_camera_pose(pos, quat, self.options.camera_shift, episode_seed)
        self.model.cam_pos[self._shoulder_cam], self.model.cam_quat[self._shoulder_cam] = pos, quat
