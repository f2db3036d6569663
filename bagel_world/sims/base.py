"""The shared core of the real-simulator envs: spaces, seeding, text actions, info.

A `RealWorldEnv` has the same observation and action spaces as its imagined twin in
`bagel_world.envs` (so one agent runs in both), but its frames come from a real
simulator, its actions are parsed by `bagel_world.sims.grammar` into exact motions, and
its reward, termination and `info` come from the simulator's true state.

Subclasses implement four hooks: `_reset_sim(seed)`, `_apply(command) -> dict`,
`_render_frame() -> (H, W, 3) uint8` and `_state() -> dict` (plain Python values, JSON-
friendly, rebuilt on every call); goal tasks also `_render_goal()`, and each task has its
own `_reward(state) -> (reward, terminated, extra info)`. For exact save/restore (and so
`copy.deepcopy` and `pickle`) they also implement `_get_sim_state() -> picklable` and
`_set_sim_state(saved)`, covering the simulator and every Python-side episode field.
Nothing here imports a simulator.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bagel_world.envs.base import (
    RENDER_FPS,
    ActionText,
    HumanWindow,
    action_to_text,
    check_env_args,
    check_option_keys,
    render_modes,
)
from bagel_world.envs.checks import register_torchrl_text_spec
from bagel_world.forking import check_not_forked
from bagel_world.sims.grammar import Command, parse_action
from bagel_world.simulator.tasks import CANONICAL_ACTIONS

log = logging.getLogger(__name__)


def set_gl_defaults() -> None:
    """Headless EGL rendering unless the user chose otherwise (call before importing a sim)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


class GrammarText(ActionText):
    """The twin's `ActionText` space, which must have canonical actions to sample from.

    It equals the imagined env's action space (`Text.__eq__` compares lengths and
    charset), and `sample()` returns text the real simulator can parse, so
    `action_space.sample()` (and `check_env`) always gives a valid action.
    """

    def __init__(self, max_length: int, canonical_actions: Sequence[str], *, seed=None):
        super().__init__(max_length, canonical_actions=canonical_actions, seed=seed)
        if not self.canonical_actions:
            raise ValueError(f"max_action_length={max_length} is shorter than every canonical action "
                             f"{list(canonical_actions)}")


def check_resolution(resolution: Any) -> tuple[int, int]:
    ok = (isinstance(resolution, (tuple, list)) and len(resolution) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 8 <= v <= 2048 for v in resolution))
    if not ok:
        raise ValueError(f"resolution must be (H, W) with ints in [8, 2048], got {resolution!r}")
    return int(resolution[0]), int(resolution[1])


@dataclass(frozen=True)
class RealState:
    """An exact snapshot of a real twin's episode, from `get_state()`, for `set_state()`.

    Opaque: `episode` holds the base env's fields (last frame and goal image, frame index,
    the env's `np_random`), `sim` the task's simulator and Python-side episode state. It is
    picklable, holds no reference to the live env (restoring it twice gives the same episode
    twice), and only fits an env of the same class, resolution and scene/layout (`key`).
    """

    env_class: str
    key: tuple[Any, ...]
    episode: dict[str, Any]
    sim: Any


def _rebuild_twin(cls: type[RealWorldEnv], args: tuple[Any, ...], kwargs: dict[str, Any],
                  extra: dict[str, Any]) -> RealWorldEnv:
    """Unpickle / deep-copy a twin: construct it afresh (its own renderer), then restore the state."""
    env = cls(*args, **kwargs)
    env.action_space, env.observation_space = extra["action_space"], extra["observation_space"]
    if extra["spec"] is not None:
        env.spec = extra["spec"]
    env._restore(extra["state"])
    return env


class RealWorldEnv(gym.Env):
    """Base class of the real-simulator envs; see the task subclasses for the docs.

    ## State save and restore, copies

    `get_state()` returns an opaque, picklable `RealState` of the whole episode (simulator
    state, e.g. MuJoCo's qpos/qvel/act/time/mocap/warm start and derived arrays or
    MiniWorld's layout, agent and entity poses, plus the episode's Python fields, the RNGs,
    the frame index and the current frame); `set_state(state)` puts the env back there
    exactly: the same next action gives bit-identical frames, rewards and infos.
    `copy.deepcopy(env)` and `pickle` build a new env from the same constructor arguments
    (with its own renderer and GL context; none is ever copied) and restore the state into
    it, so a copy is independent and continues exactly as the original would. A copy costs
    an env construction (0.1-1 s, Fetch the most); `get_state`/`set_state` costs about a
    millisecond (MiniWorld: a layout rebuild when the state is of another episode).
    Wrapper state (e.g. `TimeLimit`'s step count) is not part of `get_state`; deep-copy
    the wrapped env to copy it too.
    Rendering options (`shadows=`) belong to the env, not the state: a state restored into an
    env made with other options renders with those.
    """

    _init_args: tuple[tuple[Any, ...], dict[str, Any]]
    metadata: ClassVar[dict[str, Any]] = {"render_modes": render_modes(), "render_fps": RENDER_FPS}
    task: ClassVar[str] = ""
    has_goal: ClassVar[bool] = False
    option_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        action_mode: str = "text",
        render_mode: str | None = None,
        max_action_length: int = 128,
        resolution: tuple[int, int] = (64, 64),
        canonical_actions: Sequence[str] | None = None,
        report_latency: bool = False,
    ):
        if not self.task:
            raise TypeError("RealWorldEnv is abstract; use one of the task envs (e.g. BagelNavigateRealEnv)")
        check_env_args(render_mode, self.metadata["render_modes"], action_mode, max_action_length)
        check_not_forked("gl", type(self).__name__)
        self.resolution = check_resolution(resolution)
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.max_action_length = max_action_length
        self.report_latency = bool(report_latency)
        # Every canonical action must parse: a checkpoint's template may redefine them.
        self.canonical_actions = tuple(CANONICAL_ACTIONS[self.task] if canonical_actions is None else canonical_actions)
        for a in self.canonical_actions:
            parse_action(self.task, a)

        # Spaces: exactly those of the imagined twin.
        H, W = self.resolution
        self.frame_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        if self.has_goal:
            self.observation_space = spaces.Dict({"frame": self.frame_space, "goal": self.frame_space})
        else:
            self.observation_space = self.frame_space
        if action_mode == "text":
            self.action_space = GrammarText(max_action_length, self.canonical_actions)
            register_torchrl_text_spec()  # with TorchRL loaded, its random text is a command, not "a string"
        else:
            self.action_space = spaces.Discrete(len(self.canonical_actions))

        self._frame: np.ndarray | None = None
        self._goal: np.ndarray | None = None
        self._frame_index = 0
        self._window = HumanWindow(type(self).__name__, RENDER_FPS) if render_mode == "human" else None

    def __new__(cls, *args: Any, **kwargs: Any) -> RealWorldEnv:
        self = super().__new__(cls)
        self._init_args = (args, dict(kwargs))  # copies and pickles are rebuilt from these
        return self

    # ---- hooks -------------------------------------------------------------------------------
    def _reset_sim(self, seed: int, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def _apply(self, command: Command) -> dict[str, Any]:
        """Carry out a parsed command; returns extra step info (e.g. {"blocked": True})."""
        raise NotImplementedError

    def _render_frame(self) -> np.ndarray:
        raise NotImplementedError

    def _render_goal(self) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _reward(self, state: dict[str, Any]) -> tuple[float, bool, dict[str, Any]]:
        """(reward, terminated, extra info) for the state just reached; also called on reset."""
        raise NotImplementedError

    def _get_sim_state(self) -> Any:
        """The simulator's and the task's episode state after a reset (may alias live objects:
        `get_state` deep-copies it)."""
        raise NotImplementedError

    def _set_sim_state(self, saved: Any) -> None:
        """Restore what `_get_sim_state` returned (a private copy: it may be kept as is)."""
        raise NotImplementedError

    def _state_key(self) -> tuple[Any, ...]:
        """What a state must share with the env it is restored into (subclasses add e.g. the layout)."""
        return (self.resolution,)

    # ---- state save / restore, copies --------------------------------------------------------
    def get_state(self) -> RealState:
        """An exact, picklable snapshot of the episode for `set_state` (see the class doc)."""
        episode = {"frame": self._frame, "goal": self._goal, "frame_index": self._frame_index,
                   "np_random": self._np_random, "np_random_seed": self._np_random_seed}
        sim = self._get_sim_state() if self._frame is not None else None  # None: not reset yet
        return RealState(type(self).__name__, self._state_key(), copy.deepcopy(episode), copy.deepcopy(sim))

    def set_state(self, state: RealState) -> None:
        """Put the env back exactly where `get_state()` was called (on this env or on another of
        the same class, resolution and layout/scene); the state object itself is not changed."""
        if not isinstance(state, RealState):
            raise TypeError(f"set_state takes what get_state() returned, got {type(state).__name__}")
        if state.env_class != type(self).__name__ or state.key != self._state_key():
            raise ValueError(f"this state is of a {state.env_class} with {state.key}; it cannot be restored "
                             f"into a {type(self).__name__} with {self._state_key()}")
        self._restore(copy.deepcopy(state))

    def _restore(self, state: RealState) -> None:
        e = state.episode
        self._np_random, self._np_random_seed = e["np_random"], e["np_random_seed"]
        self._frame, self._goal, self._frame_index = e["frame"], e["goal"], e["frame_index"]
        if state.sim is not None:
            self._set_sim_state(state.sim)

    def __reduce__(self) -> tuple[Any, ...]:
        # copy.deepcopy and pickle: a new env from the constructor arguments, then the state.
        args, kwargs = self._init_args
        extra = {"state": self.get_state(), "action_space": self.action_space,
                 "observation_space": self.observation_space, "spec": self.spec}
        return _rebuild_twin, (type(self), args, kwargs, extra)

    # ---- Gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        opts = self._check_options(options)
        super().reset(seed=seed)
        # 1. One draw from np_random seeds the simulator: reset(seed) fixes every frame.
        self._reset_sim(int(self.np_random.integers(0, 2**31 - 1)), opts)
        # 2. Goal first (it may move the agent or objects temporarily), then the start frame.
        self._goal = self._render_goal() if self.has_goal else None
        self._frame = self._render_frame()
        self._frame_index = 0
        state = self._state()
        _, _, extra = self._reward(state)  # also sets the reward baseline (e.g. the start distance)
        info = {"frame_index": 0, **state, **extra}
        self._show()
        return self._observation(), info

    def step(self, action):
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        text = self._action_to_text(action)
        try:
            command = parse_action(self.task, text)
        except ValueError as e:
            if text == "a string":  # TorchRL's placeholder sample of a Text space
                raise ValueError(f"{e}. 'a string' is TorchRL's placeholder for a text space made before "
                                 "TorchRL was imported: import bagel_world.torchrl_text (or torchrl) before "
                                 "making the env, and random text actions are the task's commands") from e
            raise
        t0 = time.perf_counter()
        extra = self._apply(command)
        self._frame = self._render_frame()
        latency = time.perf_counter() - t0
        self._frame_index += 1
        state = self._state()
        reward, terminated, more = self._reward(state)
        info = {"frame_index": self._frame_index, "action_text": text, **state, **extra, **more}
        if self.report_latency:  # wall time: opt-in, as on the imagined envs (check_env compares infos)
            info["step_latency_s"] = latency
        self._show()
        return self._observation(), float(reward), bool(terminated), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        if self.render_mode == "human":
            self._show()
            return None
        return self._frame.copy()

    def close(self) -> None:
        if self._window is not None:
            self._window.close()

    def get_action_meanings(self) -> list[str]:
        """The text of each discrete action: index i of `action_mode="discrete"` sends
        `get_action_meanings()[i]`, as on the imagined twin."""
        return list(self.canonical_actions)

    # ---- helpers -----------------------------------------------------------------------------
    def _show(self) -> None:
        if self._window is not None:
            self._window.show(self._frame)

    def _observation(self) -> Any:
        if self.has_goal:
            return {"frame": self._frame.copy(), "goal": self._goal.copy()}
        return self._frame.copy()

    def _action_to_text(self, action: Any) -> str:
        return action_to_text(action, self.action_mode, self.max_action_length, self.canonical_actions)

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        return check_option_keys(options, self.option_keys, type(self).__name__)


# ---- small shared helpers for state and policies ---------------------------------------------
def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def wrap_degrees(a: float) -> float:
    """An angle in degrees wrapped to [-180, 180)."""
    return float((a + 180.0) % 360.0 - 180.0)


def choose(rng: np.random.Generator, options: Sequence[str], weights: Sequence[float]) -> str:
    p = np.asarray(weights, np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]
