"""MuJoCo helpers shared by the multiview, future-frame and manipulation adapters.

Rendering is headless (EGL on llvmpipe by default; `MUJOCO_GL=osmesa` works too). Two
settings make it fast on a CPU: a small shadow map with no multisampling (MuJoCo's
defaults, a 4096^2 shadow map and 4x MSAA, cost ~25 ms a frame on llvmpipe), and no
reflections or skybox. Importing this module imports MuJoCo; the env modules import it
only inside their classes.
"""

from __future__ import annotations

import atexit
import math
import weakref
from dataclasses import dataclass

import numpy as np

from bagel_world.forking import mark_unforkable
from bagel_world.sims.base import set_gl_defaults

set_gl_defaults()
import mujoco  # noqa: E402  (after the GL defaults: MuJoCo picks its GL backend on import)

# Palette shared by the MuJoCo scenes: colour name -> RGBA
RGBA = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "green": (0.15, 0.7, 0.25, 1.0),
    "blue": (0.15, 0.3, 0.85, 1.0),
    "yellow": (0.9, 0.8, 0.15, 1.0),
    "purple": (0.55, 0.2, 0.7, 1.0),
    "orange": (0.95, 0.5, 0.1, 1.0),
}
# shape word of an object name -> MJCF geom type
GEOM_TYPE = {"ball": "sphere", "box": "box", "cylinder": "cylinder", "capsule": "capsule"}


def body_name(obj: str) -> str:
    return obj.replace(" ", "_")  # "red ball" -> "red_ball"


def geom_xml(obj: str, size: float, extra: str = "") -> str:
    """An MJCF geom for "<colour> <shape>" whose bounding half-height is `size`."""
    colour, shape = obj.split()
    rgba = " ".join(f"{c:g}" for c in RGBA[colour])
    sizes = {"ball": f"{size}", "box": f"{size} {size} {size}",
             "cylinder": f"{0.8 * size} {size}", "capsule": f"{0.6 * size} {0.4 * size}"}[shape]
    return f'<geom name="{body_name(obj)}" type="{GEOM_TYPE[shape]}" size="{sizes}" rgba="{rgba}" {extra}/>'


def scene_header(name: str, height: int, width: int, shadows: bool = True) -> str:
    """`<mujoco>` opening: fast visual quality, offscreen buffer, checker floor material."""
    return f"""<mujoco model="{name}">
  <visual>
    <quality shadowsize="{256 if shadows else 64}" offsamples="0"/>
    <global offwidth="{max(width, 64)}" offheight="{max(height, 64)}" fovy="45"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.62 0.62 0.6" rgb2="0.48 0.48 0.46"
             width="64" height="64"/>
    <material name="floor" texture="grid" texrepeat="6 6" reflectance="0"/>
  </asset>"""


@dataclass
class OrbitCamera:
    """A free camera looking at `lookat` from `distance` m, MuJoCo's azimuth/elevation (degrees).

    Elevation is negative above the look-at point. Directions in the camera's frame:
    `right` = (sin az, -cos az, 0), `forward` (horizontal) = (cos az, sin az, 0).
    """

    lookat: np.ndarray
    distance: float
    azimuth: float
    elevation: float

    def mjv(self) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = self.lookat
        cam.distance, cam.azimuth, cam.elevation = self.distance, self.azimuth, self.elevation
        return cam

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forward, right, up) unit vectors of the view, (3,) each."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        fwd = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        right = np.array([math.sin(az), -math.cos(az), 0.0])
        return fwd, right, np.cross(right, fwd)

    def position(self) -> np.ndarray:
        return np.asarray(self.lookat, np.float64) - self.distance * self.axes()[0]

    def horizontal(self, direction: str) -> np.ndarray:
        """World unit vector (3,) of a camera-relative direction on the floor plane."""
        az = math.radians(self.azimuth)
        fwd, right = np.array([math.cos(az), math.sin(az), 0.0]), np.array([math.sin(az), -math.cos(az), 0.0])
        return {"left": -right, "right": right, "forward": fwd, "backward": -fwd}[direction]

    def project(self, p: np.ndarray, fovy_deg: float, aspect: float) -> tuple[float, float, float]:
        """(u, v, depth): image coordinates in [0, 1] (origin top-left) and depth along the view."""
        fwd, right, up = self.axes()
        d = np.asarray(p, np.float64) - self.position()
        z = float(d @ fwd)
        if z <= 1e-6:
            return float("nan"), float("nan"), z
        t = math.tan(math.radians(fovy_deg) / 2)
        u = 0.5 + float(d @ right) / (z * t * aspect) / 2
        v = 0.5 - float(d @ up) / (z * t) / 2
        return u, v, z


_LIVE_RENDERERS: weakref.WeakSet[FastRenderer] = weakref.WeakSet()
_HOOKED = False


def _close_live_renderers() -> None:
    # An EGL context freed during interpreter teardown prints a harmless EGLError; free them first.
    for r in list(_LIVE_RENDERERS):
        r.close()


def _hook_exit() -> None:
    # Registered after the first context exists, so it runs before MuJoCo's own atexit
    # eglTerminate (atexit runs last-registered first).
    global _HOOKED
    if not _HOOKED:
        atexit.register(_close_live_renderers)
        _HOOKED = True


class FastRenderer:
    """`mujoco.Renderer` without reflections or skybox; shadows as the model's quality says."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int, shadows: bool = True):
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 256 if shadows else 64
        mark_unforkable("gl", "a MuJoCo EGL rendering context")
        self.renderer = mujoco.Renderer(model, height, width)
        flags = self.renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
        _LIVE_RENDERERS.add(self)
        _hook_exit()

    def render(self, data: mujoco.MjData, camera) -> np.ndarray:
        """(H, W, 3) uint8 frame from `camera` (an MjvCamera, a camera name or id)."""
        self.renderer.update_scene(data, camera)
        return np.array(self.renderer.render(), np.uint8, copy=True)

    def close(self) -> None:
        # Explicit: letting the EGL context die at interpreter exit prints a harmless EGLError.
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        _LIVE_RENDERERS.discard(self)


_DATA_ARRAYS: dict[str, None] = {}  # names of MjData's array fields (an ordered set), found once


def _data_arrays(data: mujoco.MjData) -> list[str]:
    if not _DATA_ARRAYS:
        for name in dir(type(data)):
            if not name.startswith("_") and isinstance(getattr(data, name, None), np.ndarray):
                _DATA_ARRAYS[name] = None
    return list(_DATA_ARRAYS)


def get_data_state(model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, object]:
    """An exact copy of `data` for `set_data_state`: MuJoCo's integration state (time, qpos,
    qvel, act, ctrl, applied forces, mocap, warm start, plugin state) and every array of
    MjData, derived ones included. After `mj_step` the derived arrays (xpos, site_xpos, ...)
    are those of the state before the last integration, and code that reads them before the
    next step (Fetch's mocap action does) sees the same values only if they are copied too.
    """
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    return {"integration": state, "arrays": {n: getattr(data, n).copy() for n in _data_arrays(data)}}


def set_data_state(model: mujoco.MjModel, data: mujoco.MjData, saved: dict) -> None:
    """Restore `get_data_state` into `data` in place. Arena arrays (contacts, constraint rows)
    whose size differs now are left alone: the next mj_step recomputes them before use."""
    for name, value in saved["arrays"].items():
        dst = getattr(data, name)
        if dst.shape == value.shape:
            dst[...] = value
    mujoco.mj_setState(model, data, saved["integration"], mujoco.mjtState.mjSTATE_INTEGRATION)


def ray_visible(model, data, start: np.ndarray, target: np.ndarray, body_id: int) -> bool:
    """Whether the first geom hit on the ray from `start` toward `target` belongs to `body_id`."""
    geomid = np.zeros(1, np.int32)
    vec = np.asarray(target, np.float64) - start
    dist = mujoco.mj_ray(model, data, np.asarray(start, np.float64), vec, None, 1, -1, geomid)
    return bool(dist >= 0 and geomid[0] >= 0 and model.geom_bodyid[geomid[0]] == body_id)
