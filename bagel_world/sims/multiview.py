"""BagelMultiviewReal-v0: one static MuJoCo scene seen from an orbiting camera."""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import numpy as np

from bagel_world.sims.base import RealWorldEnv, choose, yes_no
from bagel_world.sims.grammar import Command, varied_action

# The objects a scene draws from; each reset shows 3 to 5 of them.
PALETTE = ("red ball", "blue box", "green cylinder", "yellow capsule", "purple box", "orange ball")
LOOKAT = (0.0, 0.0, 0.1)
ELEVATION_RANGE = (-80.0, -10.0)  # degrees; negative = camera above the look-at point
DISTANCE_RANGE = (1.0, 5.0)  # metres
FOVY = 45.0


def scene_xml(height: int, width: int) -> str:
    from bagel_world.sims._mujoco import body_name, geom_xml, scene_header

    bodies = "\n".join(f'    <body name="{body_name(o)}" pos="0 0 -5">{geom_xml(o, 0.1)}</body>' for o in PALETTE)
    return f"""{scene_header("bagel_multiview", height, width)}
  <worldbody>
    <light directional="true" pos="0 0 4" dir="-0.4 0.3 -1" castshadow="true" diffuse="0.6 0.6 0.6"/>
    <geom name="floor" type="plane" size="4 4 0.1" material="floor"/>
{bodies}
  </worldbody>
</mujoco>"""


class BagelMultiviewRealEnv(RealWorldEnv):
    """
    ## Description

    A static MuJoCo scene of 3-5 coloured primitives (drawn per seed from a red ball, blue
    box, green cylinder, yellow capsule, purple box and orange ball, with random positions,
    sizes and yaw) on a checker floor, seen by a free camera that orbits the point
    (0, 0, 0.1). The camera starts at a whole-degree azimuth and elevation, so orbits of
    whole degrees are exact: 12 x "orbit left 30 degrees" returns a bit-identical frame.

    ## Action Space

    As in `BagelMultiview-v0`: `ActionText(max_action_length)` or `Discrete(6)`. Text:
    `orbit left|right|up|down [N degrees]` (left/right change the azimuth; the camera moves
    toward its own left or right; up/down change the elevation within [-80, -10] degrees)
    and `zoom in|out [N m]` (distance within [1, 5] m). A motion that would leave those
    ranges is clamped (`info["clamped"]`). Anything else raises `ValueError`.

    ## Observation Space

    `Box(0, 255, (H, W, 3), uint8)`, (H, W) = `resolution` (default 64x64).

    ## Rewards

    1 when the step reaches a camera pose not seen before in the episode, else 0 (the real
    counterpart of the imagined env's view novelty).

    ## Starting State

    `reset(seed=...)` draws the objects, their poses and sizes and the camera (azimuth
    0-359, elevation -45..-20 in whole degrees, distance 2, 2.5 or 3 m) from one draw of
    `np_random`. `options` must be None or empty.

    ## Episode End

    Never terminated; truncated by `TimeLimit` after `max_episode_steps` (24 as registered).

    ## Info

    `frame_index`, `action_text`, `clamped` (step), `azimuth_deg`, `elevation_deg`,
    `distance_m`, `camera_pos`, `objects` (name -> `{"pos", "size", "visible", "image_xy",
    "depth_m"}`; `visible` means the object's centre or top is inside the frame and the first
    thing on the line of sight; `image_xy` in [0, 1], origin top-left), `visible_objects`,
    `novelty`, `is_success` (always False: no goal ends the episode), and a target view:
    `goal_azimuth_deg`, `goal_elevation_deg`, `goal_distance_m`,
    `at_goal_view`. The target view is drawn per reset on the grid the canonical actions
    reach (whole 30-degree orbits, 15-degree tilts and 0.5 m zooms from the start pose,
    within the limits); its image is `env.unwrapped.goal_frame`. It is not part of the
    observation (the imagined twin has no goal) and does not change the reward.

    ## Arguments

    ```python
    gym.make("BagelMultiviewReal-v0", action_mode="text", render_mode=None, max_action_length=128,
             resolution=(64, 64), shadows=True, canonical_actions=None, report_latency=False)
    ```
    The keywords shared with the imagined twin mean the same there; `get_action_meanings()`
    lists the discrete actions, and `report_latency=True` adds the wall time of the step
    (`step_latency_s`) to the step `info`.

    ## Version History

    * v0: Initial version (MuJoCo 3.3.0).
    """

    task: ClassVar[str] = "multiview"

    def __init__(self, shadows: bool = True, **kwargs):
        super().__init__(**kwargs)
        from bagel_world.sims import _mujoco as mj

        self._mj = mj
        H, W = self.resolution
        self.model = mj.mujoco.MjModel.from_xml_string(scene_xml(H, W))
        self.data = mj.mujoco.MjData(self.model)
        self.renderer = mj.FastRenderer(self.model, H, W, shadows=shadows)
        self._geom = {o: self.model.geom(mj.body_name(o)).id for o in PALETTE}
        self._body = {o: self.model.body(mj.body_name(o)).id for o in PALETTE}
        self._base_size = {o: self.model.geom_size[g].copy() for o, g in self._geom.items()}
        self.present: tuple[str, ...] = ()
        self.camera: Any = None
        self.goal_pose: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (azimuth, elevation, distance)
        self.goal_frame: np.ndarray | None = None  # (H, W, 3) uint8 view from the goal pose
        self._seen: set[tuple[float, float, float]] = set()

    # ---- hooks -------------------------------------------------------------------------------
    def _reset_sim(self, seed: int, options: dict[str, Any]) -> None:
        rng = np.random.default_rng(seed)
        m = self.model
        # 1. Which objects, where, how big: non-overlapping on a disc of radius 0.7 m.
        k = int(rng.integers(3, 6))
        self.present = tuple(PALETTE[i] for i in sorted(rng.choice(len(PALETTE), k, replace=False)))
        placed: list[tuple[np.ndarray, float]] = []
        for o in PALETTE:
            g, b = self._geom[o], self._body[o]
            if o not in self.present:
                m.body_pos[b] = (0.0, 0.0, -5.0)  # parked under the opaque floor
                continue
            s = float(rng.uniform(0.08, 0.15))
            m.geom_size[g] = self._base_size[o] * (s / 0.1)
            for _ in range(1000):
                r, th = 0.7 * math.sqrt(rng.random()), rng.uniform(-math.pi, math.pi)
                xy = np.array([r * math.cos(th), r * math.sin(th)])
                if all(np.linalg.norm(xy - q) > s + qs + 0.08 for q, qs in placed):
                    break
            placed.append((xy, s))
            yaw = rng.uniform(-math.pi, math.pi)
            m.body_pos[b] = (xy[0], xy[1], s)
            m.body_quat[b] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        self._mj.mujoco.mj_forward(m, self.data)
        # 2. Camera: whole degrees, so orbits by whole degrees add up exactly.
        self.camera = self._mj.OrbitCamera(
            lookat=np.array(LOOKAT), distance=float(rng.choice([2.0, 2.5, 3.0])),
            azimuth=float(rng.integers(0, 360)), elevation=float(rng.integers(-45, -19)))
        self._seen = {self._pose_key()}
        # 3. A goal view on the canonical grid (whole 30-degree orbits, 15-degree tilts,
        #    0.5 m zooms from the start), reachable with the canonical actions.
        cam = self.camera
        self.goal_pose = (
            (cam.azimuth + 30.0 * float(rng.integers(-6, 6))) % 360.0,
            float(np.clip(cam.elevation + 15.0 * float(rng.integers(-2, 3)), *ELEVATION_RANGE)),
            float(np.clip(cam.distance + 0.5 * float(rng.integers(-1, 2)), *DISTANCE_RANGE)),
        )
        az, el, dist = self.goal_pose
        goal_cam = self._mj.OrbitCamera(lookat=np.array(LOOKAT), distance=dist, azimuth=az, elevation=el)
        self.goal_frame = self.renderer.render(self.data, goal_cam.mjv())

    def _apply(self, c: Command) -> dict[str, Any]:
        cam = self.camera
        if c.verb == "orbit" and c.direction in ("left", "right"):
            # moving the camera to its right increases MuJoCo's azimuth
            cam.azimuth = (cam.azimuth + (c.amount if c.direction == "right" else -c.amount)) % 360.0
            return {"clamped": False}
        if c.verb == "orbit":
            want = cam.elevation + (-c.amount if c.direction == "up" else c.amount)
            lo, hi = ELEVATION_RANGE
            cam.elevation = min(max(want, lo), hi)
        else:
            want = cam.distance + (-c.amount if c.direction == "in" else c.amount)
            lo, hi = DISTANCE_RANGE
            cam.distance = min(max(want, lo), hi)
        return {"clamped": not lo <= want <= hi}

    def _render_frame(self) -> np.ndarray:
        return self.renderer.render(self.data, self.camera.mjv())

    def _state(self) -> dict[str, Any]:
        cam, m, d = self.camera, self.model, self.data
        H, W = self.resolution
        eye = cam.position()
        objects = {}
        for o in self.present:
            b = self._body[o]
            pos = d.xpos[b].copy()
            size = float(pos[2])  # every object stands on the floor: its half-height
            u, v, depth = cam.project(pos, FOVY, W / H)
            visible = False
            for p in (pos, pos + np.array([0.0, 0.0, 0.9 * size])):  # centre, then near the top
                pu, pv, pz = cam.project(p, FOVY, W / H)
                if pz > 0 and 0 <= pu <= 1 and 0 <= pv <= 1 and self._mj.ray_visible(m, d, eye, p, b):
                    visible = True
                    break
            objects[o] = {"pos": [float(x) for x in pos], "size": size, "visible": visible,
                          "image_xy": [u, v], "depth_m": depth}
        return {
            "azimuth_deg": float(cam.azimuth), "elevation_deg": float(cam.elevation),
            "distance_m": float(cam.distance), "camera_pos": [float(x) for x in eye],
            "objects": objects, "visible_objects": [o for o in self.present if objects[o]["visible"]],
            "goal_azimuth_deg": self.goal_pose[0], "goal_elevation_deg": self.goal_pose[1],
            "goal_distance_m": self.goal_pose[2], "at_goal_view": self._pose_key() == self.goal_pose,
        }

    def _reward(self, state: dict[str, Any]) -> tuple[float, bool, dict[str, Any]]:
        key = self._pose_key()
        novel = key not in self._seen
        self._seen.add(key)
        return float(novel), False, {"novelty": float(novel), "is_success": False}  # no goal to reach

    def _get_sim_state(self) -> dict[str, Any]:
        m = self.model  # a reset rewrites the objects' model poses and sizes
        return {"data": self._mj.get_data_state(m, self.data), "body_pos": m.body_pos.copy(),
                "body_quat": m.body_quat.copy(), "geom_size": m.geom_size.copy(), "present": self.present,
                "camera": self.camera, "goal_pose": self.goal_pose, "goal_frame": self.goal_frame,
                "seen": self._seen}

    def _set_sim_state(self, s: dict[str, Any]) -> None:
        m = self.model
        m.body_pos[...], m.body_quat[...], m.geom_size[...] = s["body_pos"], s["body_quat"], s["geom_size"]
        self._mj.set_data_state(m, self.data, s["data"])
        self.present, self.camera, self.goal_pose = s["present"], s["camera"], s["goal_pose"]
        self.goal_frame, self._seen = s["goal_frame"], s["seen"]

    def close(self) -> None:
        self.renderer.close()
        super().close()

    def _pose_key(self) -> tuple[float, float, float]:
        c = self.camera
        return (round(c.azimuth % 360.0, 6), round(c.elevation, 6), round(c.distance, 6))


# ---- labels and exploration --------------------------------------------------------------------
def state_questions(info: dict[str, Any]) -> list[tuple[str, str]]:
    """Question-answer pairs about the view, answered from the simulator state in `info`.

    The same questions in the same order for every `info` (over the whole palette; a pair
    question whose objects are not both visible is answered "not visible").
    """
    objs, vis = info["objects"], info["visible_objects"]
    qa = [(f"Is the {o} visible?", yes_no(o in vis)) for o in PALETTE]
    qa.append(("How many objects can you see?", str(len(vis))))
    qa.append(("Are you looking from high above?", yes_no(info["elevation_deg"] < -50.0)))
    nearest = min(vis, key=lambda o: objs[o]["depth_m"]) if vis else None
    qa.append(("Which object is closest to the camera?", f"the {nearest}" if nearest else "none"))
    for a, b in itertools.combinations(PALETTE, 2):
        answer = (yes_no(objs[a]["image_xy"][0] < objs[b]["image_xy"][0]) if a in vis and b in vis
                  else "not visible")
        qa.append((f"Is the {a} left of the {b}?", answer))
    return qa


def explore_action(rng: np.random.Generator, info: dict[str, Any], *, vary: float = 0.0) -> str:
    """A biased random canonical action: mostly orbits, some zooms, away from the pose limits."""
    if vary > 0 and rng.random() < vary:
        return varied_action("multiview", rng)
    el, dist = info["elevation_deg"], info["distance_m"]
    up = 0.0 if el - 15 < ELEVATION_RANGE[0] else 0.12
    down = 0.0 if el + 15 > ELEVATION_RANGE[1] else 0.12
    zin = 0.0 if dist - 0.5 < 1.5 else 0.08
    zout = 0.0 if dist + 0.5 > 4.0 else 0.08
    return choose(rng, ["orbit left 30 degrees", "orbit right 30 degrees", "orbit up 15 degrees",
                        "orbit down 15 degrees", "zoom in", "zoom out"], [0.3, 0.3, up, down, zin, zout])
