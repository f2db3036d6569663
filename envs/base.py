"""The shared core of the BAGEL world-model envs: a thin `gymnasium.Env` over a `Simulator`.

The env owns spaces, seeding, input checks, reward, termination and render; the simulator
owns the model. Every env of a process that names the same (checkpoint, backend, device)
shares one simulator (`shared_simulator`), so N envs load one model, and a
`BagelVectorEnv` steps its sub-envs through one `Simulator.step` call.

Stepping and resetting are written for a *list* of envs of one class (`_reset_batch`,
`_step_batch`): a single env calls them with `[self]`, the vector env with its sub-envs,
so both run the same code and give the same frames under the same seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bagel_world.envs.checks import (
    PRINTABLE,
    ActionText,
    action_to_text,
    check_env_args,
    check_image,
    check_option_keys,
    check_prompt_text,
    check_scenarios,
    check_text_action,
    register_torchrl_text_spec,
    user_scenarios,
)
from bagel_world.envs.registry import (
    _SIMULATORS,  # noqa: F401 - tests seed the registry through this module
    clear_simulator_cache,
    shared_simulator,
)
from bagel_world.envs.rendering import RENDER_FPS, HumanWindow, have_pygame, render_modes
from bagel_world.forking import ASYNC_HINT, check_not_forked
from bagel_world.simulator.base import Simulator, StepOutput
from bagel_world.simulator.scenarios import ScenarioSet

# Defined in checks.py, registry.py and rendering.py, and importable from here as they always were.
__all__ = [
    "FORK_HINT", "PRINTABLE", "RENDER_FPS", "ActionText", "BagelWorldEnv", "HumanWindow", "Scene",
    "action_to_text", "check_env_args", "check_image", "check_option_keys", "check_prompt_text",
    "check_text_action", "clear_simulator_cache", "have_pygame", "render_modes", "shared_simulator",
]

# What to do instead of forking a process that holds a model (see `bagel_world.forking`).
FORK_HINT = ("use vectorization_mode='vector_entry_point' (the default of gym.make_vec for these ids: one model "
             "batch for all sub-envs), or " + ASYNC_HINT)


@dataclass
class Scene:
    """What one episode starts from."""

    start: np.ndarray  # (H, W, 3) uint8
    goal: np.ndarray | None  # (H, W, 3) uint8
    instruction: str | None  # the session's task prompt
    question: str | None  # the yes/no question of model-judged rewards
    index: int  # scenario index, -1 for a user's own start image


# ---- the env ---------------------------------------------------------------------------------
class BagelWorldEnv(gym.Env):
    """Base class: an imagined world stepped by a BAGEL simulator. See the task subclasses."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": render_modes(), "render_fps": RENDER_FPS}
    task: ClassVar[str] = ""
    # Keys `reset(options=...)` accepts; subclasses with a goal add "goal_image".
    option_keys: ClassVar[tuple[str, ...]] = ("scene_index", "start_image", "instruction")

    def __init__(
        self,
        simulator: Simulator | None = None,
        checkpoint: str | Path | None = None,
        backend: str | None = None,
        device: str | None = None,
        action_mode: str = "text",
        render_mode: str | None = None,
        max_action_length: int = 128,
        report_latency: bool = False,
        scenarios: ScenarioSet | str | Path | None = None,
        resolution: tuple[int, int] | None = None,
    ):
        if not self.task:
            raise TypeError("BagelWorldEnv is abstract; use one of the task envs (e.g. BagelNavigateEnv)")
        check_env_args(render_mode, self.metadata["render_modes"], action_mode, max_action_length)
        if simulator is not None and not isinstance(simulator, Simulator):
            raise TypeError(f"simulator must be a bagel_world Simulator, got {type(simulator).__name__}")
        if simulator is not None and (checkpoint is not None or backend is not None or device is not None):
            raise ValueError("pass either simulator= or checkpoint=/backend=/device=, not both")

        self.simulator = simulator if simulator is not None else shared_simulator(checkpoint, backend, device)
        if getattr(self.simulator, "in_process_model", False):  # a model in torch in this process
            check_not_forked("torch", type(self).__name__, FORK_HINT)
        templates = self.simulator.tasks()
        if self.task not in templates:
            raise ValueError(f"the simulator has no task {self.task!r}; it knows {sorted(templates)}")
        self.template = templates[self.task]
        self.resolution: tuple[int, int] = tuple(self.template.resolution)  # (H, W)
        if resolution is not None and tuple(resolution) != self.resolution:
            raise ValueError(
                f"resolution={resolution!r}: this model generates {self.task!r} frames at (H, W) = "
                f"{self.resolution}; pass that or None, and resize with "
                "gymnasium.wrappers.ResizeObservation if you need another size"
            )
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.max_action_length = max_action_length
        self.report_latency = report_latency

        # 1. Spaces. Frames are (H, W, 3) uint8 at the task template's resolution.
        H, W = self.resolution
        self.frame_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        self.observation_space = self._observation_space()
        if action_mode == "text":
            self.action_space = ActionText(max_action_length, canonical_actions=self.template.canonical_actions)
            register_torchrl_text_spec()  # with TorchRL loaded, its random text is a command, not "a string"
        else:
            if not self.template.canonical_actions:
                raise ValueError(f"task {self.task!r} defines no canonical actions; use action_mode='text'")
            self.action_space = spaces.Discrete(len(self.template.canonical_actions))

        # 2. Start scenes: the user's scenario set, else the checkpoint's, else procedural scenes.
        #    Rewards stay centred on the checkpoint's set either way (`Simulator.feature_mean`), so a
        #    custom start distribution does not change what a reward means.
        #    Shared between envs: copy what is handed out, never write into it.
        self.scenarios = (check_scenarios(self.simulator.scenarios(self.task), self.task, self.resolution,
                                          f"of {type(self.simulator).__name__}")
                          if scenarios is None else user_scenarios(scenarios, self.task, self.resolution))

        # 3. Episode state (set by reset).
        self._sid: str | None = None
        self._window = HumanWindow(type(self).__name__, RENDER_FPS) if render_mode == "human" else None
        self._frame: np.ndarray | None = None
        self._frame_index = 0
        self._scene: Scene | None = None

    # ---- overridable task parts --------------------------------------------------------------
    def _observation_space(self) -> spaces.Space:
        return self.frame_space

    def _observation(self) -> Any:
        return self._frame.copy()

    def _reset_info(self) -> dict[str, Any]:
        s = self._scene
        return {"scene_index": s.index, "instruction": s.instruction, "frame_index": self._frame_index,
                "is_success": False}

    @classmethod
    def _begin_episodes(cls, envs: Sequence[BagelWorldEnv]) -> None:
        """Per-episode reward state (e.g. goal features), computed once per reset."""

    @classmethod
    def _rewards(cls, envs: Sequence[BagelWorldEnv]) -> list[tuple[float, bool, dict[str, Any]]]:
        """(reward, terminated, extra info) per env, for the frames they just reached."""
        raise NotImplementedError

    def _scene_from_options(self, opts: dict[str, Any], scene_index: int | None) -> Scene:
        """The episode's scene from checked options; `scene_index` is None for a user's start image."""
        if scene_index is None:
            start, instruction = opts["start_image"], None
        else:
            start = self.scenarios.frames[scene_index].copy()
            instr = self.scenarios.instructions
            instruction = instr[scene_index] if instr is not None else None
        if "instruction" in opts:
            instruction = opts["instruction"]
        return Scene(start=start, goal=None, instruction=instruction, question=None,
                     index=-1 if scene_index is None else scene_index)

    # ---- Gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        out = type(self)._reset_batch([self], [seed], [options])[0]
        self._show()
        return out

    def step(self, action):
        if self._sid is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        text = self._action_to_text(action)
        out = type(self)._step_batch([self], [text])[0]
        self._show()
        return out

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        if self.render_mode == "human":
            self._show()
            return None
        return self._frame.copy()

    def _show(self) -> None:
        if self._window is not None:
            self._window.show(self._frame)

    @property
    def canonical_actions(self) -> tuple[str, ...]:
        """The task's canonical action texts (from the simulator's task template)."""
        return tuple(self.template.canonical_actions)

    def get_action_meanings(self) -> list[str]:
        """The text of each discrete action: index i of `action_mode="discrete"` sends
        `get_action_meanings()[i]`. The same list on the real twin; in text mode these are
        what `action_space.sample()` draws from."""
        return list(self.canonical_actions)

    @property
    def session_id(self) -> str | None:
        """The simulator session this env steps (None before reset)."""
        return self._sid

    def __deepcopy__(self, memo):
        """A copy of a running env is an independent branch of it: same RNG state, step
        count and scene, the same (shared) simulator and scenario set, and a fork of the
        simulator session. `copy.deepcopy(env)` on a wrapped env forks it too."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        memo.setdefault(id(self.simulator), self.simulator)
        memo.setdefault(id(self.scenarios), self.scenarios)  # shared and never written
        for k, v in self.__dict__.items():
            if k not in ("_sid", "_window"):
                new.__dict__[k] = copy.deepcopy(v, memo)
        new._window = None if self._window is None else HumanWindow(cls.__name__, RENDER_FPS)  # its own window
        new._sid = None if self._sid is None else self.simulator.fork(self._sid)
        return new

    def close(self) -> None:
        self._close_session()  # the simulator is shared: it stays open
        if self._window is not None:
            self._window.close()

    # ---- helpers -----------------------------------------------------------------------------
    def _action_to_text(self, action: Any) -> str:
        """The text the model sees for `action`, or a ValueError naming what is accepted."""
        return action_to_text(action, self.action_mode, self.max_action_length, self.template.canonical_actions)

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Options with images converted to (H, W, 3) uint8 copies; ValueError on anything else."""
        opts = check_option_keys(options, self.option_keys, type(self).__name__)
        if "scene_index" in opts and "start_image" in opts:
            raise ValueError("give options['scene_index'] or options['start_image'], not both")
        if "scene_index" in opts:
            i = opts["scene_index"]
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self.scenarios):
                raise ValueError(f"options['scene_index'] must be an int in [0, {len(self.scenarios)}), got {i!r}")
        if "start_image" in opts:
            opts["start_image"] = check_image(opts["start_image"], "options['start_image']", self.resolution)
        if opts.get("instruction") is not None:
            check_prompt_text(opts["instruction"], "options['instruction']")
        return opts

    def _draw_seed(self) -> int:
        # Noise seed for the simulator: drawn from np_random, so reset(seed) fixes every frame.
        return int(self.np_random.integers(0, 2**31 - 1))

    def _close_session(self) -> None:
        if self._sid is not None:
            sid, self._sid = self._sid, None
            try:
                self.simulator.close(sid)
            except KeyError:  # already dropped by the simulator (e.g. a restarted server)
                pass

    def _features(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Centred unit features (B, D) of frames (`Simulator.centred_features`)."""
        return self.simulator.centred_features(self.task, frames)

    # ---- batched core (one env or a vector env's sub-envs; all of one class and simulator) ----
    @classmethod
    def _reset_batch(cls, envs: Sequence[BagelWorldEnv], seeds: Sequence[int | None],
                     options: Sequence[dict[str, Any] | None]) -> list[tuple[Any, dict[str, Any]]]:
        # 1. Check every env's options before anything changes: a bad call changes nothing.
        opts = [e._check_options(o) for e, o in zip(envs, options, strict=True)]
        scenes = []
        for e, o, seed in zip(envs, opts, seeds, strict=True):
            # 2. Seed np_random, then draw the scene from it (unless the user named one).
            gym.Env.reset(e, seed=seed)
            if "start_image" in o:
                index = None
            elif "scene_index" in o:
                index = int(o["scene_index"])
            else:
                index = int(e.np_random.integers(len(e.scenarios)))
            scenes.append(e._scene_from_options(o, index))
        # 3. Replace each env's session by a fresh one on its start frame.
        for e, scene in zip(envs, scenes):
            e._close_session()
            e._sid = e.simulator.open(e.task, [scene.start], prompt=scene.instruction)
            e._scene, e._frame, e._frame_index = scene, scene.start.copy(), 0
        # 4. Task reward state, batched across envs.
        cls._begin_episodes(envs)
        return [(e._observation(), e._reset_info()) for e in envs]

    @classmethod
    def _step_batch(cls, envs: Sequence[BagelWorldEnv], texts: Sequence[str]) -> list[tuple]:
        """Step envs by already-checked action texts through ONE simulator.step call."""
        seeds = [e._draw_seed() for e in envs]
        outs: list[StepOutput] = envs[0].simulator.step([e._sid for e in envs], list(texts), seeds)
        for e, out in zip(envs, outs, strict=True):
            e._frame, e._frame_index = np.asarray(out.frame, np.uint8).copy(), int(out.frame_index)
        results = []
        for e, out, text, seed, (reward, terminated, extra) in zip(envs, outs, texts, seeds, cls._rewards(envs)):
            info = {"model_text": out.text, "frame_index": e._frame_index, "action_text": text, "noise_seed": seed}
            if e.report_latency:
                info["step_latency_s"] = float(out.latency_s)
            info.update(extra)
            results.append((e._observation(), float(reward), bool(terminated), False, info))
        return results
