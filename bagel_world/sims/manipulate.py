"""BagelManipulateReal-v0: the Fetch robot (Gymnasium-Robotics) moved by text gripper commands."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from typing import Any, ClassVar

import numpy as np

from bagel_world.sims.base import RealWorldEnv, choose, yes_no
from bagel_world.sims.grammar import Command, varied_action

STEP_M = 0.05  # Fetch moves its gripper target at most 5 cm per control step
SETTLE_STEPS = 3  # control steps per <= 5 cm chunk: the gripper lags its target (3, 4.5, 4.9 cm)
GRIP_STEPS = 3  # control steps for the fingers to open or close fully
SCENES = {
    "pick_and_place": ("gymnasium_robotics.envs.fetch.pick_and_place", "MujocoFetchPickAndPlaceEnv"),
    "push": ("gymnasium_robotics.envs.fetch.push", "MujocoFetchPushEnv"),
}
# A close view of the table top from the far side, facing the robot.
CAMERA = {"lookat": (1.3, 0.75, 0.45), "distance": 0.85, "azimuth": 180.0, "elevation": -50.0}
BLOCK_RGBA = (0.85, 0.12, 0.12, 1.0)
OPEN_WIDTH = 0.06  # m between the fingers above which the gripper counts as open


def _import_fetch(scene: str):
    import importlib

    from bagel_world.sims.base import set_gl_defaults

    set_gl_defaults()
    module, cls = SCENES[scene]
    # Importing gymnasium_robotics registers its envs and prints a notice about unrelated ones.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), cls)


class BagelManipulateRealEnv(RealWorldEnv):
    """
    ## Description

    The Fetch robot of Gymnasium-Robotics (`FetchPickAndPlace-v4` by default, or
    `FetchPush-v4` with `scene="push"`) on MuJoCo 3.3.0, with the block recoloured red and
    the target marker hidden, seen by a free camera brought close to the table top from
    its far side (facing the robot, azimuth 180, elevation -50, 0.85 m). Each reset places
    the block and draws a goal position on the table (goals in the air are switched off so
    the goal can be shown as an image). The goal image is the same scene with the block
    moved to the goal (the arm stays where it starts), rendered for one frame.

    ## Action Space

    As in `BagelManipulate-v0`: `ActionText(max_action_length)` or `Discrete(8)`. Text:
    `move [the] gripper left|right|forward|backward|up|down [N cm|m]` (default 5 cm; each
    chunk of at most 5 cm takes 3 Fetch control steps, 0.12 s, re-aimed at the chunk's end
    point because the gripper lags its mocap target; it gets within ~2 mm unless something
    blocks it) and `open|close [the] gripper` (3 control steps). Directions are the
    camera's: left/right across the image, forward = away from the camera (toward the
    robot base), up = world up. The gripper
    command latches: after "close gripper" every later move keeps squeezing (so a grasp
    holds) until "open gripper". With `scene="push"` the fingers are welded shut and
    open/close change nothing. Anything else raises `ValueError`.

    ## Observation Space

    `Dict({"frame": Box(0, 255, (H, W, 3), uint8), "goal": Box(0, 255, (H, W, 3), uint8)})`,
    (H, W) = `resolution` (default 64x64).

    ## Rewards

    Progress of the block toward the goal (previous minus new distance, metres), plus
    `success_bonus` on success.

    ## Starting State

    `reset(seed=...)` seeds Fetch with one draw from `np_random` (block position within
    15 cm of the gripper's start, goal within 15 cm on the table), then opens the fingers
    (3 control steps). `options` must be None or empty.

    ## Episode End

    Terminated when the block is within 5 cm of the goal (Fetch's own success test,
    `info["is_success"]`); truncated by `TimeLimit` after `max_episode_steps` (64 as
    registered).

    ## Info

    `frame_index`, `action_text` (step), `scene`, `gripper_pos` ([x, y, z] m, world),
    `gripper_width` (m between the fingers), `gripper_open`, `gripper_command`
    ("open"/"closed"), `block_pos`, `block_on_table`, `block_lifted`, `block_grasped`,
    `block_visible`, `block_image_xy`, `gripper_image_xy` ([0, 1], origin top-left),
    `block_from_gripper_cam` / `goal_from_block_cam` ([right, forward, up] offsets in the
    camera's frame, m), `goal_pos`, `goal_distance`, `is_success`.

    ## Arguments

    ```python
    gym.make("BagelManipulateReal-v0", scene="pick_and_place", action_mode="text", render_mode=None,
             max_action_length=128, resolution=(64, 64), shadows=True, success_bonus=1.0,
             canonical_actions=None, report_latency=False)
    ```
    The keywords shared with the imagined twin mean the same there; `get_action_meanings()`
    lists the discrete actions, and `report_latency=True` adds the wall time of the step
    (`step_latency_s`) to the step `info`.

    ## Version History

    * v0: Initial version (Gymnasium-Robotics 1.4.2 Fetch v4, MuJoCo 3.3.0).
    """

    task: ClassVar[str] = "manipulate"
    has_goal: ClassVar[bool] = True

    def __init__(self, scene: str = "pick_and_place", shadows: bool = True, success_bonus: float = 1.0, **kwargs):
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; accepted: {sorted(SCENES)}")
        super().__init__(**kwargs)
        self.scene, self.success_bonus = scene, float(success_bonus)
        from bagel_world.sims import _mujoco as mj

        self._mj = mj
        H, W = self.resolution
        self.fetch = _import_fetch(scene)(render_mode=None, width=W, height=H)
        self.fetch.target_in_the_air = False  # goals on the table, so the goal image is physical
        self.model, self.data = self.fetch.model, self.fetch.data
        m = self.model
        self._block_body = m.body("object0").id
        block_geom = [g for g in range(m.ngeom) if m.geom_bodyid[g] == self._block_body][0]
        m.geom_matid[block_geom] = -1  # drop the textured material: a plain red block
        m.geom_rgba[block_geom] = BLOCK_RGBA
        # Hide the goal marker and the mocap's long axis-line geoms: groups >= 3 are not drawn.
        m.site_group[m.site("target0").id] = 5
        mocap = m.body("robot0:mocap").id
        m.geom_group[[g for g in range(m.ngeom) if m.geom_bodyid[g] == mocap]] = 5
        self.renderer = mj.FastRenderer(m, H, W, shadows=shadows)
        self.camera = mj.OrbitCamera(lookat=np.array(CAMERA["lookat"]), distance=CAMERA["distance"],
                                     azimuth=CAMERA["azimuth"], elevation=CAMERA["elevation"])
        self._fingers = [int(m.jnt_qposadr[m.joint(n).id]) for n in
                         ("robot0:l_gripper_finger_joint", "robot0:r_gripper_finger_joint")]
        self._grip = 1.0  # latched gripper command: +1 open, -1 close
        self._prev_distance = 0.0

    # ---- hooks -------------------------------------------------------------------------------
    def _reset_sim(self, seed: int, options: dict[str, Any]) -> None:
        self.fetch.reset(seed=seed)
        self._grip = 1.0
        for _ in range(GRIP_STEPS):  # Fetch resets with closed fingers: start open, as commanded
            self._fetch_step(np.zeros(3))

    def _apply(self, c: Command) -> dict[str, Any]:
        if c.verb in ("open", "close"):
            self._grip = 1.0 if c.verb == "open" else -1.0
            for _ in range(GRIP_STEPS):
                self._fetch_step(np.zeros(3))
            return {}
        if c.direction == "up":
            unit = np.array([0.0, 0.0, 1.0])
        elif c.direction == "down":
            unit = np.array([0.0, 0.0, -1.0])
        else:
            unit = self.camera.horizontal(c.direction)
        n = max(1, math.ceil(c.amount / STEP_M - 1e-9))
        for _ in range(n):  # equal chunks of at most 5 cm
            # Fetch moves the target relative to where the gripper IS, so a 5 cm step moves it
            # only ~3 cm; re-aim at the chunk's end point for a few steps (it converges to ~5 cm).
            target = self._grip_pos() + unit * (c.amount / n)
            for _ in range(SETTLE_STEPS):
                self._fetch_step(np.clip((target - self._grip_pos()) / STEP_M, -1.0, 1.0))
        return {}

    def _grip_pos(self) -> np.ndarray:
        return self.fetch._utils.get_site_xpos(self.model, self.data, "robot0:grip").copy()

    def _fetch_step(self, move: np.ndarray) -> None:
        # Fetch action: [dx, dy, dz] in units of 5 cm (world frame), then the finger command.
        self.fetch.step(np.array([*move, self._grip], np.float32))

    def _render_frame(self) -> np.ndarray:
        return self.renderer.render(self.data, self.camera.mjv())

    def _render_goal(self) -> np.ndarray:
        mujoco = self._mj.mujoco
        m, d = self.model, self.data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        saved = np.empty(mujoco.mj_stateSize(m, spec))
        mujoco.mj_getState(m, d, saved, spec)
        adr = int(m.jnt_qposadr[m.joint("object0:joint").id])
        d.qpos[adr:adr + 3] = self.fetch.goal
        d.qpos[adr + 3:adr + 7] = (1.0, 0.0, 0.0, 0.0)
        mujoco.mj_forward(m, d)
        goal = self._render_frame()
        mujoco.mj_setState(m, d, saved, spec)
        mujoco.mj_forward(m, d)
        return goal

    def _state(self) -> dict[str, Any]:
        m, d, cam = self.model, self.data, self.camera
        H, W = self.resolution
        f = self.fetch
        grip = f._utils.get_site_xpos(m, d, "robot0:grip").copy()
        block = f._utils.get_site_xpos(m, d, "object0").copy()
        goal = np.asarray(f.goal, np.float64).copy()
        width = float(d.qpos[self._fingers[0]] + d.qpos[self._fingers[1]])
        lifted = bool(block[2] > f.height_offset + 0.02)
        near = bool(np.linalg.norm(block - grip) < 0.04)
        _, right, _ = cam.axes()
        fwd = np.cross(np.array([0.0, 0.0, 1.0]), right)  # horizontal, away from the camera

        def cam_frame(v: np.ndarray) -> list[float]:
            return [float(v @ right), float(v @ fwd), float(v[2])]

        bu, bv, bz = cam.project(block, 45.0, W / H)
        gu, gv, _ = cam.project(grip, 45.0, W / H)
        goal_distance = float(np.linalg.norm(block - goal))
        return {
            "scene": self.scene,
            "gripper_pos": [float(x) for x in grip],
            "gripper_width": width,
            "gripper_open": width > OPEN_WIDTH,
            "gripper_command": "open" if self._grip > 0 else "closed",
            "block_pos": [float(x) for x in block],
            "block_on_table": bool(block[2] < f.height_offset + 0.01),
            "block_lifted": lifted,
            "block_grasped": bool(lifted and near and self._grip < 0),
            "block_visible": bool(bz > 0 and 0 <= bu <= 1 and 0 <= bv <= 1
                                  and self._mj.ray_visible(m, d, cam.position(), block, self._block_body)),
            "block_image_xy": [bu, bv],
            "gripper_image_xy": [gu, gv],
            "block_from_gripper_cam": cam_frame(block - grip),
            "goal_from_block_cam": cam_frame(goal - block),
            "goal_pos": [float(x) for x in goal],
            "goal_distance": goal_distance,
            "is_success": bool(goal_distance < f.distance_threshold),
        }

    def _reward(self, state: dict[str, Any]) -> tuple[float, bool, dict[str, Any]]:
        progress = self._prev_distance - state["goal_distance"]
        self._prev_distance = state["goal_distance"]
        return progress + (self.success_bonus if state["is_success"] else 0.0), state["is_success"], {}

    def _state_key(self) -> tuple[Any, ...]:
        return (*super()._state_key(), self.scene)

    def _get_sim_state(self) -> dict[str, Any]:
        f = self.fetch  # Fetch's own episode state: its goal and its RNG (used on reset)
        return {"data": self._mj.get_data_state(self.model, self.data), "fetch_goal": f.goal,
                "fetch_np_random": f._np_random, "fetch_np_random_seed": f._np_random_seed,
                "grip": self._grip, "prev_distance": self._prev_distance}

    def _set_sim_state(self, s: dict[str, Any]) -> None:
        f = self.fetch
        self._mj.set_data_state(self.model, self.data, s["data"])
        f.goal, f._np_random, f._np_random_seed = s["fetch_goal"], s["fetch_np_random"], s["fetch_np_random_seed"]
        self._grip, self._prev_distance = s["grip"], s["prev_distance"]

    def close(self) -> None:
        self.renderer.close()
        self.fetch.close()
        super().close()


# ---- labels and exploration --------------------------------------------------------------------
def state_questions(info: dict[str, Any]) -> list[tuple[str, str]]:
    """Question-answer pairs about the scene, answered from the simulator state in `info`.

    The same questions in the same order for every `info` (a recorder can store (T, Q) arrays).
    """
    right, fwd, up = info["block_from_gripper_cam"]
    qa = [
        ("Is the gripper open?", yes_no(info["gripper_open"])),
        ("Is the robot holding the red block?", yes_no(info["block_grasped"])),
        ("Is the red block on the table?", yes_no(info["block_on_table"])),
        ("Is the red block at the goal?", yes_no(info["is_success"])),
        ("Is the red block close to the goal?", yes_no(info["goal_distance"] < 0.1)),
        ("Is the red block visible?", yes_no(info["block_visible"])),
        ("Is the gripper above the red block?", yes_no(math.hypot(right, fwd) < 0.02 and up < -0.01)),
        ("Is the gripper left of the red block?", yes_no(right > 0.02)),
    ]
    return qa


def explore_action(rng: np.random.Generator, info: dict[str, Any], *, vary: float = 0.0) -> str:
    """A biased random action: often a scripted pick-and-place step, otherwise a random one.

    The scripted part reaches above the block, descends, closes, lifts and carries it toward
    the goal, so recorded data shows grasps and carried blocks, not only an arm waving.
    """
    if vary > 0 and rng.random() < vary:
        return varied_action("manipulate", rng)
    if rng.random() < 0.4:
        return choose(rng, ["move gripper left", "move gripper right", "move gripper forward",
                            "move gripper backward", "move gripper up", "move gripper down",
                            "open gripper", "close gripper"], [1, 1, 1, 1, 1, 1, 0.4, 0.4])
    if info["block_grasped"]:
        r, f, u = info["goal_from_block_cam"]
        if info["block_pos"][2] < info["goal_pos"][2] + 0.04:
            return "move gripper up"
        return move_toward(r, f, 0.0) or "open gripper"
    r, f, u = info["block_from_gripper_cam"]
    if math.hypot(r, f) > 0.025:  # line up above the block, from a safe height
        return "move gripper up" if u > -0.05 else move_toward(r, f, 0.0)
    if info["gripper_command"] == "closed":
        return "open gripper" if u < -0.03 else "move gripper up"
    return "move gripper down" if u < -0.015 else "close gripper"


def move_toward(right: float, forward: float, up: float) -> str | None:
    """The canonical move along the largest camera-frame component of an offset, if any is > 1 cm."""
    comps = {"right": right, "forward": forward, "up": up}
    axis = max(comps, key=lambda k: abs(comps[k]))
    if abs(comps[axis]) < 0.01:
        return None
    names = {"right": ("right", "left"), "forward": ("forward", "backward"), "up": ("up", "down")}[axis]
    return f"move gripper {names[0] if comps[axis] > 0 else names[1]}"
