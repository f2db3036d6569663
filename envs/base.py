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
import functools
import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bagel_world.forking import ASYNC_HINT, check_not_forked
from bagel_world.simulator.base import Simulator, StepOutput
from bagel_world.simulator.scenarios import ScenarioSet

log = logging.getLogger(__name__)

# Printable ASCII, space included (Gymnasium's default Text charset has no space).
PRINTABLE = "".join(chr(c) for c in range(32, 127))

# What to do instead of forking a process that holds a model (see `bagel_world.forking`).
FORK_HINT = ("use vectorization_mode='vector_entry_point' (the default of gym.make_vec for these ids: one model "
             "batch for all sub-envs), or " + ASYNC_HINT)

# Frames per second of videos of an episode, for the imagined envs and their real twins alike.
RENDER_FPS = 4

_SIMULATORS: dict[tuple, Simulator] = {}
_SIMULATORS_LOCK = threading.Lock()


# ---- shared simulators and scenario sets -----------------------------------------------------
def shared_simulator(checkpoint=None, backend: str | None = None, device=None) -> Simulator:
    """One simulator per (checkpoint, backend, device) in this process, made on first use."""
    ckpt = None if checkpoint is None else str(checkpoint)
    if ckpt is not None and Path(ckpt).expanduser().exists():
        ckpt = str(Path(ckpt).expanduser().resolve())  # same folder, same key
    key = (ckpt, None if backend is None else str(backend), None if device is None else str(device))
    with _SIMULATORS_LOCK:
        sim = _SIMULATORS.get(key)
        if sim is None:
            from bagel_world.simulator import make_simulator  # heavy: only when an env needs it

            log.info("creating simulator for checkpoint=%s backend=%s device=%s", *key)
            sim = make_simulator(checkpoint, backend=backend, device=device)
            _SIMULATORS[key] = sim
    return sim


def clear_simulator_cache() -> None:
    """Forget the shared simulators (their memory is freed once no env holds them)."""
    with _SIMULATORS_LOCK:
        _SIMULATORS.clear()


@functools.lru_cache(maxsize=8)
def _scenario_file(path: str, mtime_ns: int, task: str, resolution: tuple[int, int]) -> ScenarioSet:
    # The sub-envs of a vector env share one load of the file (read-only, like `Simulator.scenarios`);
    # the modification time in the key makes a rewritten file load afresh.
    return _check_scenarios(ScenarioSet.load(path), task, resolution, f"from {path}")


def _user_scenarios(scenarios: Any, task: str, resolution: tuple[int, int]) -> ScenarioSet:
    if isinstance(scenarios, ScenarioSet):
        return _check_scenarios(scenarios, task, resolution, "passed as scenarios=")
    if isinstance(scenarios, (str, Path)):
        path = Path(scenarios).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"scenarios={str(scenarios)!r} is not a file; pass a .npz written by "
                                    "ScenarioSet.save (e.g. by `bagel-world scenarios`) or a ScenarioSet")
        return _scenario_file(str(path), path.stat().st_mtime_ns, task, resolution)
    raise TypeError(f"scenarios must be a ScenarioSet or the path of its .npz, got {type(scenarios).__name__}")


def _check_scenarios(scen: ScenarioSet, task: str, resolution: tuple[int, int], where: str) -> ScenarioSet:
    H, W = resolution
    if len(scen) == 0:
        raise ValueError(f"scenario set for task {task!r} {where} is empty")
    for name, arr in (("frames", scen.frames), ("goals", scen.goals)):
        if arr is None:
            continue
        if tuple(arr.shape[1:]) != (H, W, 3) or arr.dtype != np.uint8:
            raise ValueError(
                f"scenario set for task {task!r} {where} has {name} of shape {arr.shape[1:]} {arr.dtype}, "
                f"but the task runs at (H, W, 3) = {(H, W, 3)} uint8"
            )
        if len(arr) != len(scen.frames):
            raise ValueError(f"scenario set for task {task!r} {where} has {len(arr)} {name} for "
                             f"{len(scen.frames)} frames")
    return scen


# ---- input checks ----------------------------------------------------------------------------
class ActionText(spaces.Text):
    """Printable-ASCII text of 1..max_length characters with at least one non-space.

    `sample()` without a mask draws one of `canonical_actions` (those that fit in
    `max_length`), so random agents send commands the task understands; with none given
    (or none fitting), or with a mask, it draws random printable text. Either way a sample
    satisfies the rule the env enforces.
    """

    def __init__(self, max_length: int, *, canonical_actions: Sequence[str] = (),
                 seed: int | np.random.Generator | None = None):
        super().__init__(max_length, min_length=1, charset=PRINTABLE, seed=seed)
        self.canonical_actions = tuple(a for a in canonical_actions if len(a) <= max_length)

    def contains(self, x: Any) -> bool:
        return super().contains(x) and bool(x.strip())

    def sample(self, mask=None, probability=None) -> str:
        if mask is None and probability is None and self.canonical_actions:
            return self.canonical_actions[int(self.np_random.integers(len(self.canonical_actions)))]
        for _ in range(1000):
            s = super().sample(mask=mask, probability=probability)
            if s.strip():
                return s
        raise ValueError("the sampling mask allows only whitespace; no valid action can be drawn")

    def __repr__(self) -> str:
        return f"ActionText(1, {self.max_length}, printable ASCII, not blank)"


def check_env_args(render_mode: Any, render_modes: Sequence[str], action_mode: Any, max_action_length: Any) -> None:
    """The constructor arguments every bagel-world env shares, or a ValueError naming the bad one."""
    if render_mode == "human" and not have_pygame():
        raise ValueError(
            "render_mode='human' shows the frames in a pygame window, and pygame is not installed: "
            "pip install pygame (or pip install 'bagel-world[human]'), or use render_mode='rgb_array' "
            "and show env.render() yourself"
        )
    if render_mode is not None and render_mode not in render_modes:
        accepted = ", ".join(["None", *map(repr, render_modes)])
        raise ValueError(f"render_mode {render_mode!r} is not supported; accepted: {accepted}")
    if action_mode not in ("text", "discrete"):
        raise ValueError(f"action_mode {action_mode!r} is not supported; accepted: 'text', 'discrete'")
    if isinstance(max_action_length, bool) or not isinstance(max_action_length, int) or max_action_length < 1:
        raise ValueError(f"max_action_length must be a positive int, got {max_action_length!r}")


def have_pygame() -> bool:
    try:
        return importlib.util.find_spec("pygame") is not None
    except ValueError:  # a module put in sys.modules without a spec
        return False


def render_modes() -> list[str]:
    """The render modes the envs declare: "human" only where pygame is installed, because
    `check_env` makes an env in every declared mode (and gym.make(render_mode="human")
    otherwise falls back to Gymnasium's `HumanRendering`, which needs pygame too)."""
    return ["rgb_array", "human"] if have_pygame() else ["rgb_array"]


class HumanWindow:
    """The pygame window of `render_mode="human"`: shows (H, W, 3) uint8 frames at `fps`,
    scaled up `scale` times. Opened on the first frame; pygame is imported only here."""

    def __init__(self, title: str, fps: int, scale: int = 4):
        self.title, self.fps, self.scale = title, fps, scale
        self._window = None
        self._clock = None

    def show(self, frame: np.ndarray) -> None:
        import pygame

        if self._window is None:
            pygame.init()
            pygame.display.init()
            pygame.display.set_caption(self.title)
            H, W = frame.shape[:2]
            self._window = pygame.display.set_mode((W * self.scale, H * self.scale))
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))  # (W, H, 3)
        self._window.blit(pygame.transform.scale(surface, self._window.get_size()), (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            pygame.quit()
            self._window = None


def action_to_text(action: Any, action_mode: str, max_length: int, canonical_actions: Sequence[str]) -> str:
    """A text action as is (checked), or a discrete index mapped to its canonical text."""
    if action_mode == "text":
        return check_text_action(action, max_length)
    n = len(canonical_actions)
    a = action.item() if isinstance(action, np.ndarray) and action.shape == () else action
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
        raise ValueError(f"a discrete action must be an int in [0, {n}), got {type(action).__name__} {action!r}")
    if not 0 <= a < n:
        listed = ", ".join(f"{i}={t!r}" for i, t in enumerate(canonical_actions))
        raise ValueError(f"discrete action {a} is out of range; accepted 0..{n - 1}: {listed}")
    return canonical_actions[int(a)]


def check_option_keys(options: Any, accepted: Sequence[str], owner: str) -> dict[str, Any]:
    """A copy of the reset options, or a ValueError naming unknown keys and the accepted ones."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict or None, got {type(options).__name__}")
    unknown = sorted(map(str, set(options) - set(accepted)))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown} for {owner}; accepted keys: {list(accepted)}")
    return dict(options)


def check_text_action(action: Any, max_length: int) -> str:
    """The action itself if it is acceptable text, else a ValueError saying why."""
    if not isinstance(action, str):
        hint = ""
        if isinstance(action, (np.ndarray, np.number, int, float, list, tuple)):
            # What array-based RL libraries (Stable-Baselines3, ...) send: they cannot produce text.
            hint = ("; libraries whose policies output numbers (e.g. Stable-Baselines3) need the env made with "
                    "action_mode='discrete', whose actions index env.unwrapped.get_action_meanings()")
        raise ValueError(f"a text action must be a str, got {type(action).__name__} {action!r}{hint}")
    if not action.strip():
        raise ValueError(f"action {action!r} is empty or blank; give 1 to {max_length} printable characters")
    if len(action) > max_length:
        raise ValueError(
            f"action {action[:40]!r}... has {len(action)} characters; at most max_action_length={max_length}"
        )
    bad = sorted({c for c in action if c not in PRINTABLE})
    if bad:
        raise ValueError(
            f"action {action!r} contains non-printable characters {bad}; accepted: printable ASCII "
            "(codes 32-126, space included)"
        )
    return action


def check_image(image: Any, name: str, resolution: tuple[int, int]) -> np.ndarray:
    """A copy of `image` as (H, W, 3) uint8, or a ValueError naming what is wrong."""
    H, W = resolution
    accepted = f"an RGB PIL image of {W}x{H} px or a numpy array of shape {(H, W, 3)} and dtype uint8"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"{name} is a PIL image in mode {image.mode!r}; accepted: {accepted} "
                             "(convert it with image.convert('RGB'))")
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} is a {type(image).__name__}; accepted: {accepted}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} has dtype {image.dtype}; accepted: {accepted}")
    if image.shape != (H, W, 3):
        raise ValueError(f"{name} has shape {image.shape}; accepted: {accepted}")
    return np.array(image, dtype=np.uint8, copy=True)


def check_prompt_text(value: Any, name: str, max_length: int = 512) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    if len(value) > max_length or any(c not in PRINTABLE for c in value):
        raise ValueError(f"{name} {value[:60]!r} must be at most {max_length} printable ASCII characters")
    return value


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
        else:
            if not self.template.canonical_actions:
                raise ValueError(f"task {self.task!r} defines no canonical actions; use action_mode='text'")
            self.action_space = spaces.Discrete(len(self.template.canonical_actions))

        # 2. Start scenes: the user's scenario set, else the checkpoint's, else procedural scenes.
        #    Rewards stay centred on the checkpoint's set either way (`Simulator.feature_mean`), so a
        #    custom start distribution does not change what a reward means.
        #    Shared between envs: copy what is handed out, never write into it.
        self.scenarios = (_check_scenarios(self.simulator.scenarios(self.task), self.task, self.resolution,
                                           f"of {type(self.simulator).__name__}")
                          if scenarios is None else _user_scenarios(scenarios, self.task, self.resolution))

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
