"""Per-task templates: how each world-model task is phrased to the model, and defaults.

A checkpoint folder may carry `world.json` to override any field per task, e.g.
`{"tasks": {"navigate": {"resolution": [64, 64], "sampling": {"num_timesteps": 12}}}}`;
our trained small checkpoints do (and name only the tasks they were trained on), the
published 7B one does not and gets the `LARGE` defaults for every task.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bagel_world.simulator.base import SamplingSettings, TaskTemplate

TASK_NAMES = ("navigate", "multiview", "future_frame", "manipulate")

# Steps of one episode, for the imagined envs and their real twins alike (their TimeLimit).
MAX_EPISODE_STEPS = {"navigate": 64, "multiview": 24, "future_frame": 32, "manipulate": 64}

_PROMPTS = {
    "navigate": "You are a first-person world simulator. Each turn gives the current view and a movement; "
    "show the view after that movement.",
    "multiview": "You render one static scene from a moving camera. Each turn gives the current view and a "
    "camera motion; show the scene from the new camera pose.",
    "future_frame": "You predict how a physical scene evolves. Each turn gives the current frame and an "
    "event or a wait; show the frame after it.",
    "manipulate": "You simulate a robot arm on a table seen by a fixed camera. Each turn gives the current "
    "frame and a gripper command; show the frame after the robot carries it out.",
}

CANONICAL_ACTIONS: dict[str, tuple[str, ...]] = {
    "navigate": (
        "move forward 0.5 m",
        "move backward 0.5 m",
        "turn left 30 degrees",
        "turn right 30 degrees",
        "strafe left 0.5 m",
        "strafe right 0.5 m",
    ),
    "multiview": (
        "orbit left 30 degrees",
        "orbit right 30 degrees",
        "orbit up 15 degrees",
        "orbit down 15 degrees",
        "zoom in",
        "zoom out",
    ),
    "future_frame": (
        "wait 0.1 s",
        "wait 0.5 s",
        "push the red ball left",
        "push the red ball right",
        "push the blue box left",
        "push the blue box right",
    ),
    "manipulate": (
        "move gripper left",
        "move gripper right",
        "move gripper forward",
        "move gripper backward",
        "move gripper up",
        "move gripper down",
        "open gripper",
        "close gripper",
    ),
}

# The published 7B model: the official editing settings (section 8), at 512x512.
LARGE_SAMPLING = SamplingSettings(
    num_timesteps=50, timestep_shift=3.0, cfg_text_scale=4.0, cfg_img_scale=2.0,
    cfg_interval=(0.0, 1.0), cfg_renorm_type="text_channel", cfg_renorm_min=0.0,
)
# Small CPU models: few steps, no guidance unless the checkpoint says otherwise.
SMALL_SAMPLING = SamplingSettings(
    num_timesteps=10, timestep_shift=1.0, cfg_text_scale=1.0, cfg_img_scale=1.0,
    cfg_interval=(0.0, 1.0), cfg_renorm_type="global", cfg_renorm_min=0.0,
)


def default_templates(large: bool) -> dict[str, TaskTemplate]:
    res = (512, 512) if large else (64, 64)
    sampling = LARGE_SAMPLING if large else SMALL_SAMPLING
    return {
        name: TaskTemplate(
            name=name,
            system_prompt=_PROMPTS[name],
            action_format="{action}",
            canonical_actions=CANONICAL_ACTIONS[name],
            window=2 if large else 4,
            resolution=res,
            sampling=sampling,
        )
        for name in TASK_NAMES
    }


def templates_for_checkpoint(folder: str | Path | None, large: bool) -> dict[str, TaskTemplate]:
    """Defaults for the model size, overridden by the checkpoint's `world.json` if present."""
    templates = default_templates(large)
    if folder is None or not (Path(folder) / "world.json").is_file():
        return templates
    overrides: dict[str, Any] = json.loads((Path(folder) / "world.json").read_text()).get("tasks", {})
    for name, over in overrides.items():
        if name not in templates:
            raise ValueError(f"{folder}/world.json names unknown task {name!r}; known: {TASK_NAMES}")
        templates[name] = apply_overrides(templates[name], over)
    return templates


def trained_tasks(folder: str | Path | None) -> tuple[str, ...] | None:
    """The tasks a checkpoint's `world.json` names (those it was trained on); None when the
    folder has no world.json (the published 7B model: every task, zero-shot)."""
    if folder is None or not (Path(folder) / "world.json").is_file():
        return None
    return tuple(json.loads((Path(folder) / "world.json").read_text()).get("tasks", {}))


def apply_overrides(t: TaskTemplate, over: dict[str, Any]) -> TaskTemplate:
    over = dict(over)
    if "sampling" in over:
        s = over.pop("sampling")
        if "cfg_interval" in s:
            s["cfg_interval"] = tuple(s["cfg_interval"])
        over["sampling"] = replace(t.sampling, **s)
    if "resolution" in over:
        over["resolution"] = tuple(over["resolution"])
    if "canonical_actions" in over:
        over["canonical_actions"] = tuple(over["canonical_actions"])
    return replace(t, **over)


def template_to_json(t: TaskTemplate) -> dict[str, Any]:
    d = asdict(t)
    d["sampling"] = asdict(t.sampling)
    return d
