"""BagelFutureFrameReal-v0: MuJoCo objects falling, bouncing and being pushed in a walled arena."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from bagel_world.envs.future_frame import DEFAULT_QUESTION, MOVED_QUESTION  # the imagined twin's questions
from bagel_world.sims.base import RealWorldEnv, choose, yes_no
from bagel_world.sims.grammar import Command, varied_action

OBJECTS = ("red ball", "blue box", "green cylinder", "yellow capsule")
SIZES = {"red ball": 0.1, "blue box": 0.08, "green cylinder": 0.09, "yellow capsule": 0.1}  # half-heights, m
TIMESTEP = 0.004  # s of physics per mj_step
ARENA = 0.7  # the walls stand at x, y = +-ARENA
MOVING_SPEED = 0.05  # m/s; slower objects (and slower spins than 0.5 rad/s) count as still
MOVED_M = 0.02  # "has it moved?" beyond this displacement from the start pose
# Contact softness with a damping ratio under 1: things bounce (about 40% of the drop height).
SOLREF = "0.02 0.2"
CAMERA = {"lookat": (0.0, 0.0, 0.0), "distance": 2.1, "azimuth": 90.0, "elevation": -55.0}


def scene_xml(height: int, width: int) -> str:
    from bagel_world.sims._mujoco import body_name, geom_xml, scene_header

    contact = f'solref="{SOLREF}" friction="0.3 0.002 0.0001"'
    bodies = []
    for o in OBJECTS:
        extra = contact + (' condim="6"' if o.endswith("ball") else "")  # rolling friction for the ball
        bodies.append(f'    <body name="{body_name(o)}" pos="0 0 1"><freejoint/>{geom_xml(o, SIZES[o], extra)}</body>')
    wall = f'type="box" rgba="0.75 0.72 0.68 1" {contact}'
    a, t, h = ARENA, 0.03, 0.08
    return f"""{scene_header("bagel_future_frame", height, width)}
  <option timestep="{TIMESTEP}"/>
  <worldbody>
    <light directional="true" pos="0 0 4" dir="0.3 0.4 -1" castshadow="true" diffuse="0.6 0.6 0.6"/>
    <geom name="floor" type="plane" size="3 3 0.1" material="floor" {contact}/>
    <geom name="wall_n" {wall} pos="0 {a + t} {h}" size="{a + 2 * t} {t} {h}"/>
    <geom name="wall_s" {wall} pos="0 {-a - t} {h}" size="{a + 2 * t} {t} {h}"/>
    <geom name="wall_e" {wall} pos="{a + t} 0 {h}" size="{t} {a} {h}"/>
    <geom name="wall_w" {wall} pos="{-a - t} 0 {h}" size="{t} {a} {h}"/>
{chr(10).join(bodies)}
  </worldbody>
</mujoco>"""


class BagelFutureFrameRealEnv(RealWorldEnv):
    """
    ## Description

    Four MuJoCo objects (red ball, blue box, green cylinder, yellow capsule) in a walled
    1.4 x 1.4 m arena on a checker floor, seen by a fixed camera from the south (azimuth 90,
    elevation -55). Each reset drops them from random heights (0.07-0.47 m above rest) with
    random orientations and small random velocities; contacts are bouncy. The episode's
    goal is a yes/no question about the scene, answered from the simulator state.

    ## Action Space

    As in `BagelFutureFrame-v0`: `ActionText(max_action_length)` or `Discrete(6)`. Text:
    `wait [N s|ms]` (advance physics N seconds, default 0.1) and
    `push [the] <colour> <shape> left|right|forward|backward [N m/s]` (add N m/s, default 1,
    to the object's velocity along the camera-relative floor direction: left/right across
    the image, forward = away from the camera; then advance 0.1 s). Naming an object not in
    the scene, or any other phrasing, raises `ValueError`.

    ## Observation Space

    `Box(0, 255, (H, W, 3), uint8)`, (H, W) = `resolution` (default 64x64).

    ## Rewards

    1 when the true answer to the episode's question is "yes", else 0 (the real
    counterpart of the imagined env's `P(yes)`; `info["p_yes"]` is 1.0 or 0.0).

    ## Starting State

    `reset(seed=...)` draws every object's position, height, orientation and velocity from
    one draw of `np_random`; the first frame shows them in the air. `options` may hold
    `{"question": str}`; other keys raise `ValueError`.

    ## Episode End

    Truncated by `TimeLimit` after `max_episode_steps` (32 as registered); the return counts
    the steps on which the answer is "yes" (`info["is_success"]`). With
    `terminate_on_success=True` the episode ends at the first "yes" instead.

    ## Info

    `frame_index`, `action_text` (step), `time_s`, `question`, `answer`, `p_yes`,
    `is_success`, `anything_moved`, `all_at_rest`, `objects` (name -> `{"pos", "vel",
    "speed", "moving", "on_ground", "moved", "visible", "image_xy"}`; `on_ground` = touching
    the floor, `moved` = more than 2 cm from the reset pose, `visible` = centre inside the
    frame and first on the line of sight, `image_xy` in [0, 1] with the origin top-left).

    ## Arguments

    ```python
    gym.make("BagelFutureFrameReal-v0", question=None, action_mode="text", render_mode=None,
             max_action_length=128, resolution=(64, 64), shadows=True, terminate_on_success=False,
             canonical_actions=None, report_latency=False)
    ```
    The keywords shared with the imagined twin mean the same there; `get_action_meanings()`
    lists the discrete actions, and `report_latency=True` adds the wall time of the step
    (`step_latency_s`) to the step `info`.
    `question` (or `reset(options={"question": ...})`) must be one that `state_questions`
    asks, e.g. "Is the red ball on the ground?"; default "Is the red ball left of the blue box?".
    `terminate_on_success` as in `BagelFutureFrame-v0`.

    ## Version History

    * v0: Initial version (MuJoCo 3.3.0).
    """

    task: ClassVar[str] = "future_frame"
    option_keys: ClassVar[tuple[str, ...]] = ("question",)

    def __init__(self, question: str | None = None, shadows: bool = True, terminate_on_success: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.terminate_on_success = bool(terminate_on_success)
        if question is not None:
            _check_question(question)
        self.question = question
        from bagel_world.sims import _mujoco as mj

        self._mj = mj
        H, W = self.resolution
        self.model = mj.mujoco.MjModel.from_xml_string(scene_xml(H, W))
        self.data = mj.mujoco.MjData(self.model)
        self.renderer = mj.FastRenderer(self.model, H, W, shadows=shadows)
        self.camera = mj.OrbitCamera(lookat=np.array(CAMERA["lookat"]), distance=CAMERA["distance"],
                                     azimuth=CAMERA["azimuth"], elevation=CAMERA["elevation"])
        self._body = {o: self.model.body(mj.body_name(o)).id for o in OBJECTS}
        self._geom = {o: self.model.geom(mj.body_name(o)).id for o in OBJECTS}
        self._floor = self.model.geom("floor").id
        # qpos / qvel addresses of each object's free joint: qpos [x y z qw qx qy qz], qvel [v w]
        self._qpos = {o: int(self.model.jnt_qposadr[self.model.body_jntadr[b]]) for o, b in self._body.items()}
        self._qvel = {o: int(self.model.jnt_dofadr[self.model.body_jntadr[b]]) for o, b in self._body.items()}
        self._start: dict[str, np.ndarray] = {}
        self._episode_question = DEFAULT_QUESTION

    # ---- hooks -------------------------------------------------------------------------------
    def _check_options(self, options):
        opts = super()._check_options(options)
        if "question" in opts:
            _check_question(opts["question"])
        return opts

    def _reset_sim(self, seed: int, options: dict[str, Any]) -> None:
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        self._mj.mujoco.mj_resetData(m, d)
        placed: list[np.ndarray] = []
        for o in OBJECTS:
            for _ in range(1000):  # non-overlapping footprints
                xy = rng.uniform(-0.45, 0.45, 2)
                if all(np.linalg.norm(xy - q) > 0.3 for q in placed):
                    break
            placed.append(xy)
            q = rng.normal(size=4)
            a, v = self._qpos[o], self._qvel[o]
            d.qpos[a:a + 3] = (xy[0], xy[1], SIZES[o] + 0.02 + rng.uniform(0.05, 0.45))
            d.qpos[a + 3:a + 7] = q / np.linalg.norm(q)
            d.qvel[v:v + 3] = (*rng.uniform(-0.4, 0.4, 2), 0.0)
            d.qvel[v + 3:v + 6] = rng.normal(0.0, 2.0, 3)
        self._mj.mujoco.mj_forward(m, d)
        self._start = {o: d.xpos[b].copy() for o, b in self._body.items()}
        self._episode_question = options.get("question") or self.question or DEFAULT_QUESTION

    def _apply(self, c: Command) -> dict[str, Any]:
        if c.verb == "push":
            if c.target not in self._body:
                raise ValueError(f"cannot push the {c.target}: it is not in the scene; objects: {list(OBJECTS)}")
            v = self._qvel[c.target]
            self.data.qvel[v:v + 3] += c.amount * self.camera.horizontal(c.direction)
            seconds = 0.1
        else:
            seconds = c.amount
        self._mj.mujoco.mj_step(self.model, self.data, nstep=int(round(seconds / TIMESTEP)))
        return {}

    def _render_frame(self) -> np.ndarray:
        return self.renderer.render(self.data, self.camera.mjv())

    def _state(self) -> dict[str, Any]:
        m, d, cam = self.model, self.data, self.camera
        H, W = self.resolution
        eye = cam.position()
        touching = set()
        for con in d.contact[: d.ncon]:
            if self._floor in (con.geom1, con.geom2):
                touching.add(con.geom2 if con.geom1 == self._floor else con.geom1)
        objects = {}
        for o in OBJECTS:
            b, v = self._body[o], self._qvel[o]
            pos, vel = d.xpos[b].copy(), d.qvel[v:v + 3].copy()
            speed, spin = float(np.linalg.norm(vel)), float(np.linalg.norm(d.qvel[v + 3:v + 6]))
            u, vv, depth = cam.project(pos, 45.0, W / H)
            visible = depth > 0 and 0 <= u <= 1 and 0 <= vv <= 1 and self._mj.ray_visible(m, d, eye, pos, b)
            objects[o] = {
                "pos": [float(x) for x in pos], "vel": [float(x) for x in vel], "speed": speed,
                "moving": bool(speed > MOVING_SPEED or spin > 0.5),
                "on_ground": bool(self._geom[o] in touching),
                "moved": bool(np.linalg.norm(pos - self._start[o]) > MOVED_M),
                "visible": bool(visible), "image_xy": [u, vv],
            }
        return {
            "time_s": float(d.time), "objects": objects,
            "anything_moved": any(s["moved"] for s in objects.values()),
            "all_at_rest": not any(s["moving"] for s in objects.values()),
        }

    def _reward(self, state: dict[str, Any]) -> tuple[float, bool, dict[str, Any]]:
        q = self._episode_question
        answer = dict(state_questions(state))[q]
        yes = answer == "yes"
        info = {"question": q, "answer": answer, "p_yes": float(yes), "is_success": yes}
        return float(yes), yes and self.terminate_on_success, info

    def _get_sim_state(self) -> dict[str, Any]:
        return {"data": self._mj.get_data_state(self.model, self.data), "start": self._start,
                "question": self._episode_question}

    def _set_sim_state(self, s: dict[str, Any]) -> None:
        self._mj.set_data_state(self.model, self.data, s["data"])
        self._start, self._episode_question = s["start"], s["question"]

    def close(self) -> None:
        self.renderer.close()
        super().close()


# ---- labels and exploration --------------------------------------------------------------------
def state_questions(info: dict[str, Any]) -> list[tuple[str, str]]:
    """Question-answer pairs about the scene, answered from the simulator state in `info`.

    The same questions in the same order for every `info` (a recorder can store (T, Q) arrays).
    """
    objs = info["objects"]
    qa = [(MOVED_QUESTION, yes_no(info["anything_moved"])), ("Is everything at rest?", yes_no(info["all_at_rest"]))]
    for o, s in objs.items():
        u, v = s["image_xy"]
        centred = s["visible"] and abs(u - 0.5) < 1 / 6 and abs(v - 0.5) < 1 / 6
        qa += [
            (f"Is the {o} moving?", yes_no(s["moving"])),
            (f"Is the {o} on the ground?", yes_no(s["on_ground"])),
            (f"Has the {o} moved?", yes_no(s["moved"])),
            (f"Is the {o} visible?", yes_no(s["visible"])),
            (f"Is the {o} in the centre of the view?", yes_no(centred)),
        ]
    for a, b in itertools.combinations(objs, 2):
        qa.append((f"Is the {a} left of the {b}?", yes_no(objs[a]["image_xy"][0] < objs[b]["image_xy"][0])))
    highest = max(objs, key=lambda o: objs[o]["pos"][2] - SIZES[o])
    qa.append(("Which object is highest?", f"the {highest}"))
    return qa


def known_questions() -> list[str]:
    """Every question `state_questions` asks (the questions the env can reward)."""
    probe = {o: {"image_xy": [0.5, 0.5], "visible": True, "moving": False, "on_ground": True,
                 "moved": False, "pos": [0.0, 0.0, 0.0]} for o in OBJECTS}
    return [q for q, _ in state_questions({"objects": probe, "anything_moved": False, "all_at_rest": True})]


def _check_question(q: Any) -> None:
    known = known_questions()
    if q not in known:
        raise ValueError(f"question {q!r} cannot be answered from the simulator state; known questions: {known}")


def explore_action(rng: np.random.Generator, info: dict[str, Any], *, vary: float = 0.0) -> str:
    """A biased random canonical action: mostly short waits, pushes now and then, more at rest."""
    if vary > 0 and rng.random() < vary:
        return varied_action("future_frame", rng, targets=OBJECTS)
    push = 0.5 if info.get("all_at_rest") else 0.25  # a still scene needs a push to be interesting
    acts = ["wait 0.1 s", "wait 0.5 s", "push the red ball left", "push the red ball right",
            "push the blue box left", "push the blue box right"]
    return choose(rng, acts, [0.6 * (1 - push), 0.4 * (1 - push)] + [push / 4] * 4)
