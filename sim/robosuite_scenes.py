"""robosuite Panda scenes (Lift, Stack, PickPlaceCan) behind the `robot.Robot` interface.

Actions are the shared 7-dim layout [dx, dy, dz, droll, dpitch, dyaw, gripper] in the robot base
frame (metres, radians per control step; gripper 1 = open). They are converted to robosuite's
OSC_POSE convention: translation passes through unscaled (the controller's input and output
ranges are set equal), the roll/pitch/yaw increment R = Rz(dyaw) Ry(dpitch) Rx(droll), applied as
R @ current orientation, becomes the axis-angle vector OSC_POSE expects, and the gripper maps to
robosuite's [-1 = open, +1 = closed]. Wrong shapes and NaN raise before anything moves; values
beyond the per-step bounds or the workspace box are clamped by a `robot.SafetyFilter` and every
clamp is reported in `StepResult.info["safety"]` (as the WidowX scene does).

Images come from `sim.render.OffscreenRenderer` (a child process, so Mesa's LLVM never meets
TensorFlow or Triton in one process); robosuite's own camera observables and GL context are off,
so only the rig's cameras are drawn. `RenderSettings` edits the model before the renderer copies
it: without the floor's planar reflection (which draws the scene twice), shadow maps and MSAA,
a 128x128 frame of the Panda scenes (~350k mesh vertices) costs 3.4-4.3x less on a CPU.

Object-pose randomization ranges are task data applied to robosuite's own placement samplers;
the episode seed drives every random draw (placement, joint-init noise, camera shift, distractor
spots), so `reset(seed)` is reproducible.

Perturbations match the WidowX scene's: the camera shift moves `agentview` with the pose math of
`sim.perturbations.shifted_camera_pose` (the wrist camera rides on the hand, untouched); a table
texture and distractors are the WidowX scene's own procedural textures and distractor bodies,
copied from its XML into robosuite's model, which is recompiled once (robosuite compiles in
`make`, before an XML processor can be registered). Distractors are mocap bodies: they stand
still, clear of the task objects, and robosuite's success checks never look at them.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import xml.etree.ElementTree as ET

import numpy as np
from scipy.spatial.transform import Rotation

from robot import (
    CameraSpec,
    EmbodimentSpec,
    Observation,
    SafetyFilter,
    SafetyLimits,
    StepResult,
    UnsafeActionError,
    resolve_rig,
)
from robot.rigs import Rig
from sim.config import SceneOptions
from sim.errors import SceneOptionError
from sim.perturbations import shifted_camera_pose, table_spots
from sim.render import OffscreenRenderer, select_gl_backend
from sim.robosuite_tasks import RobosuiteTask
from sim.widowx.scene import MAX_DISTRACTORS, TABLE_TEXTURES
from sim.widowx.scene import SCENE_XML as WIDOWX_SCENE_XML

log = logging.getLogger(__name__)

THIRD_PERSON_CAMERA = "agentview"
WRIST_CAMERA = "robot0_eye_in_hand"
CAMERA_ROLES = {THIRD_PERSON_CAMERA: "primary", WRIST_CAMERA: "wrist"}
MAX_TRANSLATION = 0.05  # metres per step: robosuite's default OSC_POSE output range
MAX_ROTATION = 0.5  # radians per step (per roll/pitch/yaw entry), robosuite's default range
# OSC_POSE clips its input silently; its rotation range is set above any axis-angle vector that a
# valid roll/pitch/yaw increment can produce (|rotvec| <= sqrt(3) * MAX_ROTATION), so it never clips.
_OSC_ROTATION_RANGE = 1.0
# per-step limits as above; the box (robot base frame, metres) spans the table and bins in reach
PANDA_LIMITS = SafetyLimits(
    workspace_low=(0.0, -0.7, -0.2),
    workspace_high=(1.0, 0.7, 0.7),
    max_translation=MAX_TRANSLATION,
    max_rotation=MAX_ROTATION,
)
PROPRIO_NAMES = ("eef_x", "eef_y", "eef_z", "eef_roll", "eef_pitch", "eef_yaw", "finger_left", "finger_right")
# robosuite draws some model properties once, when it builds the model (Lift's cube size, from
# [0.020, 0.022] m); with hard_reset=False that model lives as long as the scene. A fixed seed
# makes every scene instance (e.g. each collection worker's) build the same model, so an
# episode is fixed by its reset seed alone.
_MODEL_SEED = 0
ADDED = "vla/"  # prefix of every name the scene adds to robosuite's model
DISTRACTOR_CLEARANCE = 0.10  # m from a task object's centre: wider than the Panda's open fingers reach
_DISTRACTOR_STREAM = 0xD1  # the distractors' own draw from the episode seed: robosuite's placements stay
_ROBOSUITE_CONTACT = "1"  # contype/conaffinity bit on which robosuite's robot and objects collide
_ROBOSUITE_VISUAL_GROUP = "1"  # robosuite draws group 1; RenderSettings hides group 0 (collision geoms)


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """What the offscreen renderer draws; the defaults trade looks for speed on a CPU.

    Two 128x128 frames, median of 25 under a loaded 2-core CPU: Lift 411 ms with robosuite's look
    (`RenderSettings(shadows=True, reflections=True, multisamples=4)`), 149 ms without shadows
    and reflections, 120 ms also without MSAA; PickPlaceCan 745 / 306 / 176 ms.
    """

    shadows: bool = False  # shadow maps: an extra depth pass per light
    reflections: bool = False  # planar reflections of the floor and table: the scene drawn twice
    multisamples: int = 0  # MSAA samples of the offscreen buffer (robosuite's default: 4)
    collision_geoms: bool = False  # robosuite's collision geoms (group 0) drawn over the visual meshes
    sites: bool = False  # robosuite's debug sites (grip-site cylinder and sphere); robosuite hides them too

    def apply(self, model) -> None:
        """Edit `model` (a mujoco.MjModel) so that any renderer of it follows these settings."""
        if self.multisamples < 0:
            raise SceneOptionError(f"multisamples must be >= 0, got {self.multisamples}")
        if not self.shadows:
            model.light_castshadow[:] = 0
        if not self.reflections:
            model.mat_reflectance[:] = 0.0
        if not self.collision_geoms:
            # geom groups only select what is drawn; collisions use contype/conaffinity
            model.geom_group[model.geom_group == 0] = _HIDDEN_GEOM_GROUP
        if not self.sites:
            model.site_group[:] = _HIDDEN_GEOM_GROUP
        model.vis.quality.offsamples = self.multisamples


_HIDDEN_GEOM_GROUP = 3  # MuJoCo's default visual options draw geom and site groups 0-2 only


def _full_spec(task: RobosuiteTask, size: int, cameras: tuple[str, ...]) -> EmbodimentSpec:
    return EmbodimentSpec(
        name=f"panda-robosuite-{task.env_name.lower()}",
        control_hz=float(task.control_hz),
        action_low=(-MAX_TRANSLATION,) * 3 + (-MAX_ROTATION,) * 3 + (0.0,),
        action_high=(MAX_TRANSLATION,) * 3 + (MAX_ROTATION,) * 3 + (1.0,),
        cameras=tuple(CameraSpec(c, CAMERA_ROLES[c], size, size) for c in cameras),
        proprio_names=PROPRIO_NAMES,
    )


def _controller_config() -> dict:
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller="BASIC", robot="Panda")
    # the generic BASIC config also describes parts a Panda lacks (left arm, torso, base, ...)
    config["body_parts"] = {"right": config["body_parts"]["right"]}
    arm = config["body_parts"]["right"]
    # input range == output range: the action's metres pass through unscaled
    limits = [MAX_TRANSLATION] * 3 + [_OSC_ROTATION_RANGE] * 3
    arm["input_max"], arm["output_max"] = limits, limits
    arm["input_min"], arm["output_min"] = [-x for x in limits], [-x for x in limits]
    return config


def _find_sampler(root, name: str):
    """The placement sampler called `name` in robosuite's (possibly composite) sampler tree."""
    if root.name == name:
        return root
    for child in getattr(root, "samplers", {}).values():
        found = _find_sampler(child, name)
        if found is not None:
            return found
    return None


def check_perturbations(task: RobosuiteTask, options: SceneOptions) -> None:
    """Refuse a table texture or distractors that `task`'s scene cannot show."""
    texture, n = options.table_texture, options.distractors
    if texture is not None and texture not in TABLE_TEXTURES:
        raise SceneOptionError(f"table texture {texture!r} is unknown; textures: {TABLE_TEXTURES}")
    if texture is not None and not task.table_materials:
        raise SceneOptionError(f"robosuite scene {task.env_name} has no table surface to texture; leave table_texture unset")
    if n and task.distractor_area is None:
        raise SceneOptionError(f"robosuite scene {task.env_name} has no table area for distractors; leave distractors 0")
    if n > MAX_DISTRACTORS:
        raise SceneOptionError(f"the robosuite scenes have {MAX_DISTRACTORS} distractors; asked for {n}")


def perturbed_xml(xml: str, task: RobosuiteTask, options: SceneOptions) -> str:
    """robosuite's model XML plus the table texture and distractor bodies that `options` ask for."""
    root = ET.fromstring(xml)
    # the WidowX scene defines the procedural textures and the distractors; every scene shows the same ones
    source = ET.parse(WIDOWX_SCENE_XML).getroot()
    if options.table_texture is not None:
        _add_table_texture(root, source, options.table_texture, task.table_materials)
    for i in range(options.distractors):
        root.find("worldbody").append(_distractor_body(source, i))
    return ET.tostring(root, encoding="unicode")


def _add_table_texture(root: ET.Element, source: ET.Element, name: str, materials: tuple[str, ...]) -> None:
    texture = copy.deepcopy(source.find(f"asset/texture[@name='{name}']"))
    material = copy.deepcopy(source.find(f"asset/material[@name='table/{name}']"))
    texture.set("name", ADDED + name)
    material.set("name", f"{ADDED}table/{name}")
    material.set("texture", ADDED + name)
    root.find("asset").extend([texture, material])
    surfaces = [g for g in root.iter("geom") if g.get("material") in materials]
    if not surfaces:
        raise SceneOptionError(
            f"no geom of robosuite's model uses the table materials {materials}; fix table_materials in sim/registry.py"
        )
    for geom in surfaces:
        geom.set("material", material.get("name"))


def _distractor_body(source: ET.Element, index: int) -> ET.Element:
    body = copy.deepcopy(source.find(f"worldbody/body[@name='distractor{index}']"))  # a mocap body, parked
    body.set("name", f"{ADDED}distractor{index}")
    for geom in body.iter("geom"):
        geom.attrib.pop("class", None)  # the WidowX contact bits; robosuite's follow
        geom.set("contype", _ROBOSUITE_CONTACT)
        geom.set("conaffinity", _ROBOSUITE_CONTACT)
        geom.set("group", _ROBOSUITE_VISUAL_GROUP)
    return body


class RobosuiteScene:
    """A robosuite environment as a `robot.Robot`; also exposes privileged state for scripted experts."""

    def __init__(
        self,
        task: RobosuiteTask,
        options: SceneOptions = SceneOptions(),
        seed: int | None = None,
        render: RenderSettings = RenderSettings(),
    ) -> None:
        check_perturbations(task, options)
        self.task, self.options = task, options
        size = options.image_size
        self.rig: Rig = resolve_rig(options.rig, _full_spec(task, size, tuple(CAMERA_ROLES)))
        rendered = tuple(c for c in CAMERA_ROLES if c in self.rig.cameras.values()) if options.render_images else ()
        self.spec = _full_spec(task, size, rendered)
        # robosuite forces MUJOCO_GL=egl at import unless it is set: choose first
        select_gl_backend()
        import robosuite

        self._env = robosuite.make(
            task.env_name,
            robots="Panda",
            controller_configs=_controller_config(),
            has_renderer=False,
            has_offscreen_renderer=False,  # no GL in this process: OffscreenRenderer draws the rig's cameras
            use_camera_obs=False,
            control_freq=task.control_hz,
            hard_reset=False,  # reuse the compiled model across resets (a reload costs ~1 s)
            ignore_done=True,  # episode length is the caller's business (run_episode's max_steps)
            seed=_MODEL_SEED,
            **dict(task.env_kwargs),
        )
        if options.table_texture is not None or options.distractors:
            self._rebuild_with_perturbations()
        sampler = _find_sampler(self._env.placement_initializer, task.sampler)
        if sampler is None:
            self._env.close()
            raise SceneOptionError(f"{task.env_name} has no placement sampler {task.sampler!r}")
        sampler.x_range, sampler.y_range = list(task.placement.x), list(task.placement.y)
        sampler.rotation = None if task.placement.rotation is None else list(task.placement.rotation)
        self._sim = self._env.sim
        model = self._sim.model._model
        self._robot = self._env.robots[0]
        self._arm = self._robot.arms[0]
        self._finger_joints = tuple(self._robot.gripper[self._arm].joints)
        self._cam_id = model.camera(THIRD_PERSON_CAMERA).id
        self._cam_home = (model.cam_pos[self._cam_id].copy(), model.cam_quat[self._cam_id].copy())
        self._distractors = [model.body_mocapid[model.body(f"{ADDED}distractor{i}").id] for i in range(options.distractors)]
        render.apply(model)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)  # the offscreen buffer holds a frame
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        cameras = {c.name: model.camera(c.name).id for c in self.spec.cameras}
        self._renderer = OffscreenRenderer(model, size, size, cameras) if cameras else None
        self._safety = SafetyFilter(PANDA_LIMITS, log_level=logging.DEBUG)  # clamps go to StepResult.info
        self._seeds = np.random.default_rng(seed)
        self.episode_seed: int | None = None
        self._steps = 0

    # --- robot.Robot -------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        """New episode: objects placed, joints perturbed and the camera shifted as drawn from `seed`."""
        if seed is None:
            seed = int(self._seeds.integers(2**31))
        self.episode_seed = int(seed)
        # robosuite's samplers and robot init noise share env.rng; reseed it in place so they follow
        self._env.rng.bit_generator.state = np.random.default_rng(self.episode_seed).bit_generator.state
        model = self._sim.model._model
        pos, quat = self._cam_home
        if self.options.camera_shift is not None:
            pos, quat = shifted_camera_pose(pos, quat, self.options.camera_shift, self.episode_seed)
        model.cam_pos[self._cam_id], model.cam_quat[self._cam_id] = pos, quat
        self._env.reset()
        self._place_distractors()
        self._steps = 0
        return self.observe()

    def observe(self) -> Observation:
        """Render the rig's cameras and read proprio [eef xyz, eef rpy, finger positions] (base frame)."""
        self._require_reset()
        data = self._sim.data._data
        images = self._renderer.render(data) if self._renderer is not None else {}
        pos, rot = self.eef_pose()
        fingers = [self._sim.data.get_joint_qpos(j) for j in self._finger_joints]
        proprio = np.concatenate([pos, rot.as_euler("xyz"), fingers]).astype(np.float32)
        info = {"episode_seed": self.episode_seed, "step": self._steps}
        return Observation(images=images, proprio=proprio, timestamp=float(data.time), info=info)

    def act(self, action: np.ndarray) -> StepResult:
        """Apply one action for one control period (1 / control_hz s); clamps are listed in info."""
        self._require_reset()
        pos, _ = self.eef_pose()
        a, report = self._safety(action, pos)  # raises on a wrong shape or NaN before anything moves
        rotvec = Rotation.from_euler("xyz", a[3:6]).as_rotvec()
        gripper = 1.0 - 2.0 * a[6]  # ours: 1 = open; robosuite: -1 = open, +1 = closed
        _, reward, _, _ = self._env.step(np.concatenate([a[:3], rotvec, [gripper]]))
        self._steps += 1
        success = self.success()
        info = {"step": self._steps, "safety": report, "clamped": report.clamped}
        return StepResult(self.observe(), float(reward), done=False, success=success, info=info)

    def close(self) -> None:
        """Stop the render process and free the robosuite environment."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def _rebuild_with_perturbations(self) -> None:
        """Recompile robosuite's model with the texture and distractors (robosuite compiles once in make)."""
        self._env.set_xml_processor(functools.partial(perturbed_xml, task=self.task, options=self.options))
        try:
            self._env.reset_from_xml_string(self._env.model.get_xml())
        except BaseException:
            self._env.close()
            raise

    def _place_distractors(self) -> None:
        """Stand the distractors in the task's table area, clear of the task objects, as drawn from the seed."""
        if not self._distractors:
            return
        area = self.task.distractor_area
        objects = [self.task.grasp_body] + ([self.task.target_body] if self.task.target_body else [])
        taken = [self._sim.data.xpos[self._sim.model.body_name2id(b)][:2].copy() for b in objects]
        rng = np.random.default_rng([self.episode_seed, _DISTRACTOR_STREAM])
        spots = table_spots(rng, area.x, area.y, taken, len(self._distractors), DISTRACTOR_CLEARANCE)
        for mocap, (x, y) in zip(self._distractors, spots):
            self._sim.data.mocap_pos[mocap] = (x, y, area.z)
        self._sim.forward()

    def _require_reset(self) -> None:
        if self.episode_seed is None:
            raise UnsafeActionError(f"{self.spec.name}: call reset(seed) before observe() or act()")

    # --- privileged state for scripted experts and tests -----------------------------------------
    @property
    def steps(self) -> int:
        """Actions applied since the last reset."""
        return self._steps

    def success(self) -> bool:
        """The environment's own success check (`_check_success`) on the current state."""
        return bool(self._env._check_success())

    @property
    def base_frame(self) -> tuple[np.ndarray, Rotation]:
        """The robot base's world position and orientation (actions and proprio live in this frame)."""
        body = self._sim.model.body_name2id(self._robot.robot_model.root_body)
        quat = self._sim.data.xquat[body]
        return self._sim.data.xpos[body].copy(), Rotation.from_quat(quat, scalar_first=True)

    def to_base(self, world_pos: np.ndarray, world_rot: Rotation) -> tuple[np.ndarray, Rotation]:
        """Express a world pose in the robot base frame."""
        origin, base = self.base_frame
        return base.inv().apply(world_pos - origin), base.inv() * world_rot

    def eef_pose(self) -> tuple[np.ndarray, Rotation]:
        """End-effector (grip site) position and orientation in the base frame."""
        site = self._robot.eef_site_id[self._arm]
        mat = self._sim.data.site_xmat[site].reshape(3, 3)
        return self.to_base(self._sim.data.site_xpos[site].copy(), Rotation.from_matrix(mat))

    def body_pose(self, body: str) -> tuple[np.ndarray, Rotation]:
        """A MuJoCo body's position and orientation in the base frame."""
        idx = self._sim.model.body_name2id(body)
        quat = self._sim.data.xquat[idx]
        return self.to_base(self._sim.data.xpos[idx].copy(), Rotation.from_quat(quat, scalar_first=True))

    @property
    def model(self):
        """The compiled mujoco.MjModel (robosuite's, with the texture and distractors asked for)."""
        return self._sim.model._model

    def distractor_positions(self) -> np.ndarray:
        """World positions of the distractors' bases, one row each (none without distractors)."""
        return self._sim.data.mocap_pos[self._distractors].copy()

    def camera_pose(self, camera: str = THIRD_PERSON_CAMERA) -> tuple[np.ndarray, np.ndarray]:
        """A camera's current model position and wxyz quaternion (in its parent body's frame)."""
        idx = self.model.camera(camera).id
        return self.model.cam_pos[idx].copy(), self.model.cam_quat[idx].copy()
