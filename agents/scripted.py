"""Scripted baselines, one per task. They are PRIVILEGED: they read the real simulator's state.

They run only in the real twins (`bagel_world.sims`), never in imagination: their input is
the true state in `info` (and, for navigation, the MiniWorld floor plan), which an imagined
env does not have. They are the "how well can the task be done at all" row of the agent
table, not a fair competitor of agents that see only frames.

| task         | strategy                                                                          |
|--------------|-----------------------------------------------------------------------------------|
| navigate     | shortest path on a 0.25 m grid of the floor plan (Dijkstra from the goal), follow |
|              | a waypoint 1 m ahead: turn toward it (30-degree turns), else move forward; at the |
|              | goal spot turn to the goal heading. Without a floor plan: head for the goal.      |
| multiview    | the orbit/tilt/zoom that most reduces the error to the target view (`goal_*`)     |
| future_frame | push the object the question names when it asks about motion, else wait           |
| manipulate   | line up above the block, descend, close, lift, carry toward the goal              |
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import gymnasium as gym
import numpy as np

from bagel_world.agents.base import Agent, canonical_actions, index_of, task_of
from bagel_world.sims.base import wrap_degrees
from bagel_world.sims.manipulate import move_toward

TURN_DEAD_ZONE_DEG = 15.0  # half the canonical 30-degree turn: turning would not get closer


class ScriptedAgent(Agent):
    """Base of the per-task scripts: they choose a canonical action *text* from `info`."""

    name = "scripted"
    task = ""

    def __init__(self) -> None:
        self.actions: tuple[str, ...] = ()

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:
        if task_of(env) != self.task:
            raise ValueError(f"{type(self).__name__} scripts task {self.task!r}, but the env runs {task_of(env)!r}")
        if hasattr(env.unwrapped, "session_id"):
            raise ValueError(f"{type(self).__name__} reads the real simulator's state; run it in the real twin "
                             "(bagel_world.sims), not in an imagined env")
        self.actions = canonical_actions(env)

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        return index_of(self.choose(info), self.actions)

    def choose(self, info: dict[str, Any]) -> str:
        raise NotImplementedError


# ---- navigation --------------------------------------------------------------------------------
class ScriptedNavigate(ScriptedAgent):
    """Path following on the floor plan of the real MiniWorld env (privileged)."""

    task = "navigate"

    def __init__(self, cell_m: float = 0.25, lookahead_m: float = 1.0, margin_m: float = 0.05):
        super().__init__()
        self.cell_m, self.lookahead_m, self.margin_m = cell_m, lookahead_m, margin_m
        self._dist: np.ndarray | None = None  # (nx, nz) path length to the goal, inf where blocked
        self._origin = np.zeros(2)
        self._success_radius = 0.5

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:
        super().reset(env, obs, info, seed)
        u = env.unwrapped
        self._success_radius = float(getattr(u, "success_radius", 0.5))
        world = getattr(u, "world", None)
        self._dist = None if world is None else self._distance_field(world, np.asarray(info["goal_pos"], float))

    def choose(self, info: dict[str, Any]) -> str:
        # 1. At the goal spot: turn to the goal heading.
        if info["goal_distance"] <= 0.8 * self._success_radius:
            err = wrap_degrees(info["goal_yaw_deg"] - info["agent_yaw_deg"])
            return "turn left 30 degrees" if err > 0 else "turn right 30 degrees"
        # 2. Otherwise head for a waypoint on the shortest path (or the goal itself).
        if info.get("blocked"):
            return "strafe left 0.5 m" if info["clearance_left_m"] > info["clearance_right_m"] else "strafe right 0.5 m"
        bearing = self._waypoint_bearing(info) if self._dist is not None else info["goal_bearing_deg"]
        if abs(bearing) > TURN_DEAD_ZONE_DEG:
            return "turn left 30 degrees" if bearing > 0 else "turn right 30 degrees"
        return "move forward 0.5 m"

    # ---- floor-plan path ---------------------------------------------------------------------
    def _distance_field(self, world, goal_xz: np.ndarray) -> np.ndarray:
        """Dijkstra over free grid cells from the goal; 8-connected without cutting corners."""
        c = self.cell_m
        self._origin = np.array([world.min_x, world.min_z], float)
        nx = int(math.ceil((world.max_x - world.min_x) / c))
        nz = int(math.ceil((world.max_z - world.min_z) / c))
        free = np.zeros((nx, nz), bool)
        radius = world.agent.radius + self.margin_m
        for i in range(nx):
            for j in range(nz):
                p = np.array([self._origin[0] + (i + 0.5) * c, 0.0, self._origin[1] + (j + 0.5) * c])
                free[i, j] = any(r.point_inside(p) for r in world.rooms) and not world.intersect(world.agent, p, radius)
        dist = np.full((nx, nz), np.inf)
        start = self._nearest_free(free, self._cell(goal_xz))
        dist[start] = 0.0
        heap = [(0.0, start)]
        steps = [(di, dj, math.hypot(di, dj)) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj]
        while heap:
            d, (i, j) = heapq.heappop(heap)
            if d > dist[i, j]:
                continue
            for di, dj, w in steps:
                a, b = i + di, j + dj
                if not (0 <= a < nx and 0 <= b < nz) or not free[a, b]:
                    continue
                if di and dj and not (free[i + di, j] and free[i, j + dj]):
                    continue
                if d + w < dist[a, b]:
                    dist[a, b] = d + w
                    heapq.heappush(heap, (d + w, (a, b)))
        return dist

    def _cell(self, xz) -> tuple[int, int]:
        i, j = np.floor((np.asarray(xz, float) - self._origin) / self.cell_m).astype(int)
        return int(i), int(j)

    @staticmethod
    def _nearest_free(mask: np.ndarray, cell: tuple[int, int]) -> tuple[int, int]:
        idx = np.argwhere(mask)
        if len(idx) == 0:
            raise RuntimeError("the floor plan has no free cell")
        k = int(np.argmin(((idx - np.asarray(cell)) ** 2).sum(1)))
        return int(idx[k][0]), int(idx[k][1])

    def _waypoint_bearing(self, info: dict[str, Any]) -> float:
        dist = self._dist
        cell = self._nearest_free(np.isfinite(dist), self._cell(info["agent_pos"]))
        # Walk down the distance field for lookahead_m; near the goal aim at the goal itself.
        for _ in range(int(round(self.lookahead_m / self.cell_m))):
            i, j = cell
            nbrs = [(i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                    if (di or dj) and 0 <= i + di < dist.shape[0] and 0 <= j + dj < dist.shape[1]]
            best = min(nbrs, key=lambda n: dist[n])
            if dist[best] >= dist[cell]:
                break
            cell = best
        if dist[cell] == 0.0:
            target = np.asarray(info["goal_pos"], float)
        else:
            target = self._origin + (np.asarray(cell) + 0.5) * self.cell_m
        d = target - np.asarray(info["agent_pos"], float)
        # MiniWorld: heading yaw has direction (cos yaw, -sin yaw) in (x, z); left-positive.
        return wrap_degrees(math.degrees(math.atan2(-d[1], d[0])) - info["agent_yaw_deg"])


# ---- multiview ---------------------------------------------------------------------------------
class ScriptedMultiview(ScriptedAgent):
    """Orbit, tilt and zoom toward the target view the real env draws per episode.

    Each step takes the canonical motion that most reduces the pose error (azimuth in
    30-degree units, elevation in 15-degree units, distance in 0.5 m units), with the real
    env's clamping at the elevation and distance limits taken into account.
    """

    task = "multiview"
    # canonical text -> (pose component, change); "orbit right" increases the azimuth and
    # "orbit up" lowers the (negative) elevation, as in the real env
    MOVES = {"orbit left 30 degrees": ("az", -30.0), "orbit right 30 degrees": ("az", 30.0),
             "orbit up 15 degrees": ("el", -15.0), "orbit down 15 degrees": ("el", 15.0),
             "zoom in": ("dist", -0.5), "zoom out": ("dist", 0.5)}
    UNITS = {"az": 30.0, "el": 15.0, "dist": 0.5}

    def choose(self, info: dict[str, Any]) -> str:
        from bagel_world.sims.multiview import DISTANCE_RANGE, ELEVATION_RANGE

        pose = {"az": info["azimuth_deg"], "el": info["elevation_deg"], "dist": info["distance_m"]}
        goal = {"az": info["goal_azimuth_deg"], "el": info["goal_elevation_deg"], "dist": info["goal_distance_m"]}
        limits = {"el": ELEVATION_RANGE, "dist": DISTANCE_RANGE}

        def error(k: str, v: float) -> float:
            d = wrap_degrees(goal[k] - v) if k == "az" else goal[k] - v
            return abs(d) / self.UNITS[k]

        best, gain = "orbit right 30 degrees", 0.0
        for text, (k, delta) in self.MOVES.items():
            new = pose[k] + delta
            if k in limits:
                new = min(max(new, limits[k][0]), limits[k][1])
            g = error(k, pose[k]) - error(k, new)
            if text in self.actions and g > gain + 1e-9:
                best, gain = text, g
        return best


# ---- future frame ------------------------------------------------------------------------------
class ScriptedFutureFrame(ScriptedAgent):
    """Answer the episode's question "yes" by pushing what it asks about, or by waiting."""

    task = "future_frame"

    def choose(self, info: dict[str, Any]) -> str:
        q = str(info.get("question", "")).lower()
        for obj in ("red ball", "blue box"):
            if obj in q and ("moving" in q or "moved" in q):
                return self._pick(f"push the {obj} right", "wait 0.1 s")
            if q.startswith(f"is the {obj} left of"):
                return self._pick(f"push the {obj} left", "wait 0.1 s")
        if "at rest" in q or "on the ground" in q:
            return "wait 0.5 s"
        if "anything" in q and "moved" in q:
            return self._pick("push the red ball right", "wait 0.1 s")
        return "wait 0.1 s"

    def _pick(self, want: str, fallback: str) -> str:
        return want if want in self.actions else fallback


# ---- manipulation ------------------------------------------------------------------------------
class ScriptedManipulate(ScriptedAgent):
    """Pick and place in the camera frame: reach above the block, descend, grasp, carry."""

    task = "manipulate"

    def choose(self, info: dict[str, Any]) -> str:
        if info["block_grasped"]:
            move = move_toward(*info["goal_from_block_cam"])
            return move or "move gripper up"
        r, f, u = info["block_from_gripper_cam"]  # block minus gripper: right, forward, up (m)
        if math.hypot(r, f) > 0.025:  # not above it: go up to a safe height, then across
            return "move gripper up" if u > -0.05 else move_toward(r, f, 0.0) or "move gripper up"
        if info["gripper_command"] == "closed":  # a missed grasp: reopen above the block
            return "open gripper" if u < -0.03 else "move gripper up"
        return "move gripper down" if u < -0.015 else "close gripper"


SCRIPTED: dict[str, type[ScriptedAgent]] = {
    "navigate": ScriptedNavigate,
    "multiview": ScriptedMultiview,
    "future_frame": ScriptedFutureFrame,
    "manipulate": ScriptedManipulate,
}


def scripted_agent(task: str, **kwargs) -> ScriptedAgent:
    """The scripted baseline of `task`."""
    if task not in SCRIPTED:
        raise ValueError(f"no scripted baseline for task {task!r}; known: {sorted(SCRIPTED)}")
    return SCRIPTED[task](**kwargs)
