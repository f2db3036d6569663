"""BagelNavigateReal-v0: first-person navigation in MiniWorld, the real twin of BagelNavigate-v0."""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import sys
from typing import Any, ClassVar

import numpy as np

from bagel_world.forking import mark_unforkable
from bagel_world.sims.base import RealWorldEnv, choose, set_gl_defaults, wrap_degrees, yes_no
from bagel_world.sims.grammar import Command, varied_action

# layout name -> (module, class, constructor kwargs) of a MiniWorld env with a red box `self.box`
DEFAULT_LAYOUT = "four_rooms"
LAYOUTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "one_room": ("miniworld.envs.oneroom", "OneRoom", {"size": 8}),
    "four_rooms": ("miniworld.envs.fourrooms", "FourRooms", {}),
    "maze": ("miniworld.envs.maze", "Maze", {"num_rows": 3, "num_cols": 3, "room_size": 3}),
}
MOVE_SUBSTEP = 0.1  # m; a move walks in substeps and stops at the first collision
CLOSE_M = 1.5  # "is the red box close?" below this distance
MAX_RAY = 20.0  # m; clearance rays stop here
SUCCESS_RULES = ("pose", "view")  # reach the goal pose, or a pose whose view matches the goal image
GOAL_OBJECT_QUESTION = "Is the red box visible?"  # a state question: "yes" when the frame shows the box
# landmarks=True: a coloured panel on each wall of the one room, in this order on the walls at
# max x, min z, min x and max z (MiniWorld colours; red stays the box's alone)
LANDMARK_COLORS = ("green", "blue", "yellow", "purple")
LANDMARK_LAYOUTS = ("one_room",)
PANEL_WIDTH, PANEL_HEIGHT, PANEL_LIFT, PANEL_DEPTH = 1.6, 1.2, 0.3, 0.02  # m


def import_miniworld():
    """Import MiniWorld headless: pyglet must be told before `pyglet.gl` is first imported."""
    set_gl_defaults()
    import pyglet

    if "pyglet.gl" in sys.modules and not pyglet.options["headless"]:
        raise RuntimeError("pyglet.gl was imported with a window before MiniWorld; import bagel_world.sims "
                           "adapters first, or set pyglet.options['headless'] = True yourself")
    pyglet.options["headless"] = True
    import miniworld

    mark_unforkable("gl", "MiniWorld's OpenGL context (pyglet)")
    return miniworld


def _xz(v: np.ndarray) -> list[float]:
    """[x, z] of a MiniWorld position: its floor is the x-z plane (y is up)."""
    return [float(v[0]), float(v[2])]


def pose_facing(target: np.ndarray, dist: float, theta: float) -> tuple[np.ndarray, float]:
    """(position, yaw) of a pose `dist` m from floor point `target`, in direction `theta`
    (radians, MiniWorld's yaw convention) from it, facing it. The position keeps `target`'s y."""
    pos = np.asarray(target, np.float64) + dist * np.array([math.cos(theta), 0.0, -math.sin(theta)])
    d = np.asarray(target, np.float64) - pos
    return pos, math.atan2(-d[2], d[0])  # MiniWorld's dir_vec = (cos d, 0, -sin d)


def _segments_cross(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) whether segment p-q (2,) properly crosses each wall segment a-b (N, 2)."""
    def orient(u, v, w):
        return (v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1]) - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0])

    d1, d2 = orient(a, b, p), orient(a, b, q)
    d3, d4 = orient(p, q, a), orient(p, q, b)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


class BagelNavigateRealEnv(RealWorldEnv):
    """
    ## Description

    First-person navigation in a MiniWorld layout (one room, four rooms or a 3x3 maze) with
    a red box, rendered headless (EGL, llvmpipe). The episode's goal is a pose: by default
    a spot 2-3 m from the red box, facing it (`goal="box"`), or any free pose
    (`goal="pose"`). The goal image is the view from that pose, rendered by placing the
    agent there for one frame. The camera is pitched by `cam_pitch` degrees (default -20,
    looking down so the floor shows; with MiniWorld's level view a wall 2.6 m away fills
    the whole frame).

    The one room's four walls are one uniform grey, so the goal image (the box in the
    middle, a wall behind) often does not tell which side of the box the goal is on.
    `landmarks=True` (one_room only) hangs a coloured panel in the middle of each wall
    (`LANDMARK_COLORS`: green, blue, yellow and purple, 1.6 m wide, from 0.3 to 1.5 m up,
    flat against the wall, so they never block a move), which makes the wall behind the box
    name the side. It changes only the rendering; the layout, box, start and goal of a seed
    are the same as without it.

    ## Action Space

    As in `BagelNavigate-v0`: `ActionText(max_action_length)` (text) or `Discrete(6)` over
    the canonical actions. Text follows `bagel_world.sims.grammar`:
    `move forward|backward [N m|cm]`, `strafe left|right [N m|cm]`,
    `turn left|right [N degrees]`. Turns are exact (`turn_agent`); a move walks in 0.1 m
    substeps and stops at the first collision (`info["blocked"]`). Anything else raises
    `ValueError`.

    ## Observation Space

    `Dict({"frame": Box(0, 255, (H, W, 3), uint8), "goal": Box(0, 255, (H, W, 3), uint8)})`,
    (H, W) = `resolution` (default 64x64, the small model's template resolution).

    ## Rewards

    Progress toward the goal (previous minus new distance, metres: to the goal position,
    or to the goal's circle around the box with `success="view"`), plus `success_bonus`
    on success.

    ## Starting State

    `reset(seed=...)` seeds MiniWorld with one draw from `np_random`: the layout (a new
    maze per seed), the red box, the agent's pose and the goal pose all follow from it.
    `options` must be None or empty (start and goal images cannot be imposed on a real
    simulator; unknown keys raise `ValueError`).

    ## Episode End

    Terminated on success (`info["is_success"]`). Truncated by `TimeLimit` after
    `max_episode_steps` (64 as registered). Two success rules:

    - `success="pose"` (default): within `success_radius` metres of the goal position and
      `success_angle` degrees of its heading.
    - `success="view"` (with `goal="box"` only): the view matches what the goal image shows,
      the red box from the goal's distance: the agent is within `success_radius` metres of
      the circle around the box through the goal spot, the box is visible, and it lies
      within `success_angle` degrees of the heading. The goal image shows the box the same
      way from every pose on that circle and differs only in the walls behind it, so this
      is the part of the goal the image identifies
      (`python examples/probe_goal_identifiable.py`). Reward progress is then measured to
      that circle (`view_distance`).

    Both are reported in every `info` (`pose_success`, `view_success`).

    ## Info

    `frame_index`, `action_text` (step), `blocked` (step), `layout`, `agent_pos` ([x, z] m),
    `agent_yaw_deg` (left-positive, wrapped to [-180, 180)), `goal_pos`, `goal_yaw_deg`,
    `goal_distance`, `goal_yaw_error_deg`, `goal_bearing_deg` (where the goal spot is
    relative to the heading, left positive), `goal_in_view`, `box_pos`, `box_distance`,
    `box_bearing_deg`, `box_visible` (in the view frustum and not behind a wall),
    `box_reached` (MiniWorld's `near`), `clearance_ahead_m` / `clearance_left_m` /
    `clearance_right_m` (distance to the nearest wall straight ahead and 45 degrees to
    either side, at most 20 m), `goal_box_distance` (from the goal spot to the box),
    `view_distance` (|`box_distance` - `goal_box_distance`|, goal="box" only),
    `pose_success`, `view_success` (False with goal="pose"), `is_success` (the chosen rule).

    ## Arguments

    ```python
    gym.make("BagelNavigateReal-v0", layout="four_rooms", goal="box", success="pose", cam_pitch=-20.0,
             landmarks=False, action_mode="text", render_mode=None, max_action_length=128, resolution=(64, 64),
             success_radius=0.5, success_angle=30.0, success_bonus=1.0, canonical_actions=None, report_latency=False)
    ```
    The keywords shared with the imagined twin mean the same there; `get_action_meanings()`
    lists the discrete actions, and `report_latency=True` adds the wall time of the step
    (`step_latency_s`) to the step `info`.

    ## Version History

    * v0: Initial version (MiniWorld 2.1.0). `success="view"` and `landmarks=True` are
      options added later; with their defaults the env is unchanged.
    """

    task: ClassVar[str] = "navigate"
    has_goal: ClassVar[bool] = True

    def __init__(self, layout: str = DEFAULT_LAYOUT, goal: str = "box", success: str = "pose", cam_pitch: float = -20.0,
                 success_radius: float = 0.5, success_angle: float = 30.0, success_bonus: float = 1.0,
                 landmarks: bool = False, **kwargs):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; accepted: {sorted(LAYOUTS)}")
        if landmarks and layout not in LANDMARK_LAYOUTS:
            raise ValueError(f"landmarks=True is defined for layouts {list(LANDMARK_LAYOUTS)}, not {layout!r}")
        if goal not in ("box", "pose"):
            raise ValueError(f"goal must be 'box' or 'pose', got {goal!r}")
        if success not in SUCCESS_RULES:
            raise ValueError(f"success must be one of {SUCCESS_RULES}, got {success!r}")
        if success == "view" and goal != "box":
            raise ValueError("success='view' needs goal='box' (the goal view shows the red box); got goal='pose'")
        super().__init__(**kwargs)
        if not -60.0 <= float(cam_pitch) <= 30.0:
            raise ValueError(f"cam_pitch is in degrees within [-60, 30], got {cam_pitch!r}")
        self.layout, self.goal_kind, self.success_rule, self.cam_pitch = layout, goal, success, float(cam_pitch)
        self.success_radius, self.success_angle = float(success_radius), float(success_angle)
        self.success_bonus = float(success_bonus)
        self.landmarks = bool(landmarks)

        import_miniworld()
        module, cls, ctor = LAYOUTS[layout]
        H, W = self.resolution
        # MiniWorld prints "Falling back to num_samples=4" per framebuffer: keep library code quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            self.world = getattr(importlib.import_module(module), cls)(
                obs_width=W, obs_height=H, window_width=W, window_height=H, **ctor)
        self._goal_pose: tuple[np.ndarray, float] | None = None
        self._prev_distance = 0.0
        self._world_seed: int | None = None  # the seed the world's layout was generated with

    # ---- hooks -------------------------------------------------------------------------------
    def _reset_sim(self, seed: int, options: dict[str, Any]) -> None:
        self._reset_world(seed)
        self.world.agent.cam_pitch = self.cam_pitch
        self._goal_pose = self._sample_goal()

    def _reset_world(self, seed: int) -> None:
        """MiniWorld's reset with `seed`, then the landmark panels (after it: they take no draw
        from its RNG, so the layout, box, start and goal do not depend on them)."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.world.reset(seed=seed)
        self._world_seed = seed
        if self.landmarks:
            self._add_landmarks()

    def _add_landmarks(self) -> None:
        from miniworld.entity import Box

        w = self.world
        room = w.rooms[0]
        cx, cz = (room.min_x + room.max_x) / 2, (room.min_z + room.max_z) / 2
        x0, x1, z0, z1, half = room.min_x, room.max_x, room.min_z, room.max_z, PANEL_DEPTH / 2
        walls = (((x1 - half, cz), (PANEL_DEPTH, PANEL_HEIGHT, PANEL_WIDTH)),
                 ((cx, z0 + half), (PANEL_WIDTH, PANEL_HEIGHT, PANEL_DEPTH)),
                 ((x0 + half, cz), (PANEL_DEPTH, PANEL_HEIGHT, PANEL_WIDTH)),
                 ((cx, z1 - half), (PANEL_WIDTH, PANEL_HEIGHT, PANEL_DEPTH)))
        for ((x, z), size), color in zip(walls, LANDMARK_COLORS):
            panel = Box(color, size=list(size))
            panel.radius = 0.0  # flat on the wall: the wall already keeps the agent and the box off it
            panel.pos, panel.dir = np.array([x, PANEL_LIFT, z]), 0.0
            panel.randomize(w.params, None)  # no domain randomisation: the colour as named
            w.entities.append(panel)

    def _apply(self, c: Command) -> dict[str, Any]:
        w = self.world
        if c.verb == "turn":
            w.turn_agent(c.amount if c.direction == "left" else -c.amount)
            return {"blocked": False}
        # move / strafe: walk in equal substeps of at most MOVE_SUBSTEP, stop at a collision
        sign = -1.0 if c.direction in ("backward", "left") else 1.0
        n = max(1, math.ceil(c.amount / MOVE_SUBSTEP - 1e-9))
        step = sign * c.amount / n
        for _ in range(n):
            ok = w.move_agent(step, 0.0) if c.verb == "move" else w.move_agent(0.0, step)
            if not ok:
                return {"blocked": True}
        return {"blocked": False}

    def _render_frame(self) -> np.ndarray:
        return np.array(self.world.render_obs(), np.uint8, copy=True)

    def _render_goal(self) -> np.ndarray:
        return self.render_from(*self._goal_pose)

    def render_from(self, pos: np.ndarray, yaw: float) -> np.ndarray:
        """The frame the agent would see from (pos, yaw), rendered for one frame; the agent stays put."""
        agent = self.world.agent
        keep = agent.pos.copy(), agent.dir
        agent.pos, agent.dir = np.asarray(pos, np.float64).copy(), yaw
        try:
            return self._render_frame()
        finally:
            agent.pos, agent.dir = keep

    def _state(self) -> dict[str, Any]:
        w, agent = self.world, self.world.agent
        gpos, gdir = self._goal_pose
        goal_distance = float(np.hypot(*(np.asarray(_xz(agent.pos)) - _xz(gpos))))
        yaw_error = abs(wrap_degrees(math.degrees(agent.dir - gdir)))
        box = w.box
        box_distance = float(np.hypot(*(np.asarray(_xz(agent.pos)) - _xz(box.pos))))
        box_bearing = self._bearing(box.pos)
        box_visible = self._visible(box.pos, float(box.radius), float(box.height))
        goal_box_distance = float(np.hypot(*(np.asarray(_xz(gpos)) - _xz(box.pos))))
        pose_success = bool(goal_distance <= self.success_radius and yaw_error <= self.success_angle)
        # the view rule as training labels it from recorded poses (`view_progress`)
        view_distance, view_ok = view_progress(
            [*_xz(agent.pos), math.degrees(agent.dir), *_xz(box.pos)], [*_xz(gpos), math.degrees(gdir), *_xz(box.pos)],
            box_visible, self.success_radius, self.success_angle)
        view_success = self.goal_kind == "box" and view_ok
        return {
            "layout": self.layout,
            "landmarks": self.landmarks,
            "agent_pos": _xz(agent.pos),
            "agent_yaw_deg": wrap_degrees(math.degrees(agent.dir)),
            "goal_pos": _xz(gpos),
            "goal_yaw_deg": wrap_degrees(math.degrees(gdir)),
            "goal_distance": goal_distance,
            "goal_yaw_error_deg": yaw_error,
            "goal_bearing_deg": self._bearing(gpos),
            "goal_in_view": self._visible(gpos),
            "box_pos": _xz(box.pos),
            "box_distance": box_distance,
            "box_bearing_deg": box_bearing,
            "box_visible": box_visible,
            "box_reached": bool(w.near(box)),
            "clearance_ahead_m": self._clearance(0.0),
            "clearance_left_m": self._clearance(45.0),
            "clearance_right_m": self._clearance(-45.0),
            "goal_box_distance": goal_box_distance,
            "view_distance": view_distance,
            "pose_success": pose_success,
            "view_success": view_success,
            "is_success": view_success if self.success_rule == "view" else pose_success,
        }

    def _reward(self, state: dict[str, Any]) -> tuple[float, bool, dict[str, Any]]:
        distance = state["view_distance" if self.success_rule == "view" else "goal_distance"]
        progress = self._prev_distance - distance
        self._prev_distance = distance
        return progress + (self.success_bonus if state["is_success"] else 0.0), state["is_success"], {}

    def _state_key(self) -> tuple[Any, ...]:
        return (*super()._state_key(), self.layout, self.success_rule, self.landmarks)

    def _get_sim_state(self) -> dict[str, Any]:
        # The layout (rooms, walls, static display list) follows from the seed and is rebuilt
        # from it; what moves is the entities' poses (the agent is one of them) and the RNG.
        w = self.world
        carrying = w.agent.carrying
        return {"world_seed": self._world_seed, "np_random": w._np_random, "step_count": w.step_count,
                "poses": [(ent.pos, ent.dir) for ent in w.entities], "cam_pitch": w.agent.cam_pitch,
                "carrying": None if carrying is None else w.entities.index(carrying),
                "goal_pose": self._goal_pose, "prev_distance": self._prev_distance}

    def _set_sim_state(self, s: dict[str, Any]) -> None:
        w = self.world
        if self._world_seed != s["world_seed"]:
            self._reset_world(s["world_seed"])
        if len(w.entities) != len(s["poses"]):
            raise ValueError(f"the state has {len(s['poses'])} entities, the world {len(w.entities)}")
        for ent, (pos, yaw) in zip(w.entities, s["poses"]):
            ent.pos, ent.dir = pos, yaw
        w._np_random, w.step_count, w.agent.cam_pitch = s["np_random"], s["step_count"], s["cam_pitch"]
        w.agent.carrying = None if s["carrying"] is None else w.entities[s["carrying"]]
        self._goal_pose, self._prev_distance = s["goal_pose"], s["prev_distance"]

    def close(self) -> None:
        self.world.close()
        super().close()

    # ---- geometry ----------------------------------------------------------------------------
    def _bearing(self, p: np.ndarray) -> float:
        """Angle of point p from the agent's heading in degrees, left positive."""
        a = self.world.agent
        d = np.asarray(p, np.float64) - a.pos
        # MiniWorld's dir_vec = (cos d, 0, -sin d): the yaw of a vector v is atan2(-v_z, v_x)
        return wrap_degrees(math.degrees(math.atan2(-d[2], d[0]) - a.dir))

    def _line_of_sight(self, p: np.ndarray, q: np.ndarray) -> bool:
        segs = self.world.wall_segs  # (N, 2, 3) wall segments on the floor
        a, b = segs[:, 0, [0, 2]], segs[:, 1, [0, 2]]
        return not bool(_segments_cross(np.asarray(p)[[0, 2]], np.asarray(q)[[0, 2]], a, b).any())

    def _clearance(self, offset_deg: float) -> float:
        """Distance (m, at most MAX_RAY) from the agent to the nearest wall along yaw + offset."""
        a = self.world.agent
        yaw = a.dir + math.radians(offset_deg)
        p, r = a.pos[[0, 2]], np.array([math.cos(yaw), -math.sin(yaw)])
        segs = self.world.wall_segs
        s0, e = segs[:, 0, [0, 2]], segs[:, 1, [0, 2]] - segs[:, 0, [0, 2]]
        # solve p + t r = s0 + u e for every wall: t along the ray, u in [0, 1] along the wall
        den = r[0] * e[:, 1] - r[1] * e[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = s0 - p
            t = (w[:, 0] * e[:, 1] - w[:, 1] * e[:, 0]) / den
            u = (w[:, 0] * r[1] - w[:, 1] * r[0]) / den
        hit = (np.abs(den) > 1e-12) & (t > 0) & (u >= 0) & (u <= 1)
        return float(min(t[hit].min(), MAX_RAY)) if hit.any() else MAX_RAY

    def _visible(self, p: np.ndarray, radius: float = 0.0, height: float = 0.0) -> bool:
        """Whether a thing standing at floor point p is in the view frustum and not behind a wall.

        Probes its centre and side edges at mid-height, and its top: visible if any probe is
        inside the camera's frustum (pitch included) with a clear line of sight on the floor plan.
        """
        a = self.world.agent
        H, W = self.resolution
        tan_v = math.tan(math.radians(a.cam_fov_y) / 2)
        tan_h = tan_v * W / H
        eye, fwd, right = a.cam_pos, a.cam_dir, a.right_vec
        up = np.cross(right, fwd)
        d = np.asarray(p, np.float64) - a.pos
        side = np.array([d[2], 0.0, -d[0]]) / max(float(np.hypot(d[0], d[2])), 1e-9)
        mid = np.array([0.0, height / 2, 0.0])
        probes = (p + mid, p + mid + radius * side, p + mid - radius * side, p + np.array([0.0, height, 0.0]))
        for q in probes:
            v = q - eye
            z = float(v @ fwd)
            if z > 1e-6 and abs(float(v @ right)) <= z * tan_h and abs(float(v @ up)) <= z * tan_v \
                    and self._line_of_sight(a.pos, q):
                return True
        return False

    def _sample_goal(self) -> tuple[np.ndarray, float]:
        """A free goal pose: facing the red box from 2-3 m, or anywhere (goal="pose")."""
        w, rng = self.world, self.world.np_random
        start = w.agent.pos.copy()
        for _ in range(500):
            if self.goal_kind == "box":
                # 2-3 m: close enough to fill the view, far enough to see the box whole
                theta, dist = rng.uniform(-math.pi, math.pi), rng.uniform(2.0, 3.0)
                pos, yaw = pose_facing(w.box.pos, dist, theta)
            else:
                room = w.rooms[int(rng.integers(len(w.rooms)))]
                pos = np.array([rng.uniform(room.min_x, room.max_x), 0.0, rng.uniform(room.min_z, room.max_z)])
                yaw = rng.uniform(-math.pi, math.pi)
            if not any(r.point_inside(pos) for r in w.rooms) or w.intersect(w.agent, pos, w.agent.radius):
                continue
            if np.hypot(*(pos - start)[[0, 2]]) < 2 * self.success_radius:
                continue  # not already at the goal
            if self.goal_kind == "box" and not self._line_of_sight(pos, w.box.pos):
                continue
            return pos, float(yaw)
        raise RuntimeError(f"no free goal pose found in layout {self.layout!r} (seeded reset); try another seed")


# ---- labels and exploration --------------------------------------------------------------------
def state_questions(info: dict[str, Any]) -> list[tuple[str, str]]:
    """Question-answer pairs about the scene, answered from the simulator state in `info`.

    The same questions in the same order for every `info` (a recorder can store (T, Q) arrays).
    """
    return [
        (GOAL_OBJECT_QUESTION, yes_no(info["box_visible"])),
        ("Is the red box close?", yes_no(info["box_distance"] < CLOSE_M)),
        ("Is the red box on the left or the right?",
         _turn_word(info["box_bearing_deg"], 10.0, "ahead") if info["box_visible"] else "not visible"),
        ("Is the goal close?", yes_no(info["goal_distance"] < 1.0)),
        ("Is the goal location in view?", yes_no(info["goal_in_view"])),
        ("Have you reached the goal?", yes_no(info["is_success"])),
        ("Which way should you turn to face the goal?", _turn_word(info["goal_bearing_deg"], 15.0)),
        ("Is there a wall right in front of you?", yes_no(info["clearance_ahead_m"] < 1.0)),
        ("Did you bump into a wall?", yes_no(info.get("blocked", False))),  # reset info: no move yet
    ]


def progress_poses(info: dict[str, Any]) -> tuple[list[float], list[float]]:
    """[x, z, yaw_deg, box_x, box_z] of the agent and of the goal: what goal progress is
    measured on (the red box's place, which does not move, rides along for the view rule)."""
    box = list(info["box_pos"])
    return [*info["agent_pos"], info["agent_yaw_deg"], *box], [*info["goal_pos"], info["goal_yaw_deg"], *box]


def pose_progress(pose, goal, radius: float = 0.5, angle: float = 30.0) -> tuple[float, bool]:
    """(metres between the two positions, whether `pose` counts as reaching `goal`): within
    `radius` m and `angle` degrees of heading, the env's default success rule (`success="pose"`)."""
    d = float(np.hypot(pose[0] - goal[0], pose[1] - goal[1]))
    return d, bool(d <= radius and abs(wrap_degrees(float(pose[2]) - float(goal[2]))) <= angle)


def view_progress(pose, goal, visible: bool, radius: float = 0.5, angle: float = 30.0) -> tuple[float, bool]:
    """(metres from `pose` to the circle around the red box that the goal view is taken on,
    whether `pose` counts as reaching the goal view): the env's `success="view"` rule, on
    5-element poses of `progress_poses`. `visible` is whether the frame at `pose` shows the
    box (walls can hide it, which the poses do not tell)."""
    if len(pose) < 5 or len(goal) < 5:
        raise ValueError(f"the view rule needs [x, z, yaw, box_x, box_z] poses, got {len(pose)} and {len(goal)} "
                         "elements; shards recorded before the box position was kept get it with "
                         "`bagel-world record --backfill-poses`")
    px, pz, yaw, bx, bz = (float(v) for v in pose[:5])
    box_distance = float(np.hypot(px - bx, pz - bz))
    d = abs(box_distance - float(np.hypot(float(goal[0]) - bx, float(goal[1]) - bz)))
    # MiniWorld's yaw of a floor vector v (x, z) is atan2(-v_z, v_x)
    bearing = wrap_degrees(math.degrees(math.atan2(-(bz - pz), bx - px)) - yaw)
    return d, bool(visible and d <= radius and abs(bearing) <= angle)


def _turn_word(bearing: float, dead_zone: float, ahead: str = "none") -> str:
    if abs(bearing) < dead_zone:
        return ahead
    return "left" if bearing > 0 else "right"


def explore_action(rng: np.random.Generator, info: dict[str, Any], *, vary: float = 0.0) -> str:
    """A biased random canonical action: mostly forward, turn away from walls, sometimes home in.

    `vary` is the probability of a random-amount phrasing instead (grammar coverage).
    """
    if vary > 0 and rng.random() < vary:
        return varied_action("navigate", rng)
    if info.get("blocked") or info["clearance_ahead_m"] < 1.5:  # turn away from the wall ahead
        left = info["clearance_left_m"] >= info["clearance_right_m"]
        return choose(rng, ["turn left 30 degrees", "turn right 30 degrees", "move backward 0.5 m"],
                      [4 if left else 1, 1 if left else 4, 1])
    if info.get("box_visible") and rng.random() < 0.3:  # head for the box now and then
        side = _turn_word(info["box_bearing_deg"], 15.0)
        return "move forward 0.5 m" if side == "none" else f"turn {side} 30 degrees"
    return choose(rng, ["move forward 0.5 m", "move backward 0.5 m", "turn left 30 degrees",
                        "turn right 30 degrees", "strafe left 0.5 m", "strafe right 0.5 m"],
                  [0.45, 0.05, 0.17, 0.17, 0.08, 0.08])
