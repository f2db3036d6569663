"""The envs' input checks, each a ValueError (or TypeError) naming what is accepted: the
shared constructor arguments, text and discrete actions (and `ActionText`, the space of
acceptable text), reset options, images, prompts, and scenario sets against a task."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from bagel_world.envs.rendering import have_pygame
from bagel_world.simulator.scenarios import ScenarioSet

log = logging.getLogger(__name__)

# Printable ASCII, space included (Gymnasium's default Text charset has no space).
PRINTABLE = "".join(chr(c) for c in range(32, 127))


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


def register_torchrl_text_spec() -> None:
    """Where TorchRL is already imported, register `bagel_world.torchrl_text` (random text
    actions become canonical commands); a TorchRL outside the tested range only logs a warning
    and keeps TorchRL's default spec. Called when a text-mode env or twin is made."""
    if "torchrl" not in sys.modules:
        return
    try:
        from bagel_world.torchrl_text import register

        register()
    except (ImportError, AttributeError) as exc:
        log.warning("TorchRL %s: text actions keep TorchRL's default spec (%s)",
                    getattr(sys.modules["torchrl"], "__version__", "?"), exc)


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


# ---- scenario sets ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _scenario_file(path: str, mtime_ns: int, task: str, resolution: tuple[int, int]) -> ScenarioSet:
    # The sub-envs of a vector env share one load of the file (read-only, like `Simulator.scenarios`);
    # the modification time in the key makes a rewritten file load afresh.
    return check_scenarios(ScenarioSet.load(path), task, resolution, f"from {path}")


def user_scenarios(scenarios: Any, task: str, resolution: tuple[int, int]) -> ScenarioSet:
    """The `scenarios=` an env was given (a ScenarioSet or the path of its .npz), checked."""
    if isinstance(scenarios, ScenarioSet):
        return check_scenarios(scenarios, task, resolution, "passed as scenarios=")
    if isinstance(scenarios, (str, Path)):
        path = Path(scenarios).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"scenarios={str(scenarios)!r} is not a file; pass a .npz written by "
                                    "ScenarioSet.save (e.g. by `bagel-world scenarios`) or a ScenarioSet")
        return _scenario_file(str(path), path.stat().st_mtime_ns, task, resolution)
    raise TypeError(f"scenarios must be a ScenarioSet or the path of its .npz, got {type(scenarios).__name__}")


def check_scenarios(scen: ScenarioSet, task: str, resolution: tuple[int, int], where: str) -> ScenarioSet:
    """`scen` itself if it is a non-empty set of (H, W, 3) uint8 frames (and goals) for the task."""
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
