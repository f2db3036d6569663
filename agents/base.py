"""What every agent implements, and helpers shared by the agents.

An agent acts in either twin of a task: the imagined env (`bagel_world.envs`) or the real
one (`bagel_world.sims`). Both have the same spaces; agents here work with the discrete
action mode and return an index into the env's canonical actions.

    agent.reset(env, obs, info, seed=0)     # once per episode, after env.reset
    a = agent.act(obs, info)                # int index into canonical_actions(env)
    agent.close()                           # sessions or files the agent holds
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np


class Agent(abc.ABC):
    """A policy over a task's canonical actions."""

    name: str = "agent"

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:  # noqa: B027
        """Start an episode (the env has just been reset to `obs`, `info`); optional, does nothing by default."""

    @abc.abstractmethod
    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The next action: an index into `canonical_actions(env)`."""

    def close(self) -> None:  # noqa: B027
        """Release what the agent holds (simulator sessions, models); optional, does nothing by default."""


def canonical_actions(env: gym.Env) -> tuple[str, ...]:
    """The canonical action texts of an imagined or a real env (discrete index -> text)."""
    u = env.unwrapped
    if hasattr(u, "template"):  # imagined: the simulator's task template is authoritative
        return tuple(u.template.canonical_actions)
    if hasattr(u, "canonical_actions"):  # real twin
        return tuple(u.canonical_actions)
    raise TypeError(f"{type(u).__name__} is neither a bagel_world imagined env nor a real twin")


def is_imagined(env: gym.Env) -> bool:
    """True for an env whose frames come from a simulator session (it can be forked)."""
    u = env.unwrapped
    return hasattr(u, "simulator") and hasattr(u, "session_id")


def task_of(env: gym.Env) -> str:
    task = getattr(env.unwrapped, "task", "")
    if not task:
        raise TypeError(f"{type(env.unwrapped).__name__} names no task; use a bagel_world env")
    return task


def frame_of(obs: Any) -> np.ndarray:
    """The current (H, W, 3) uint8 frame of an observation (Dict obs or a plain frame)."""
    return obs["frame"] if isinstance(obs, dict) else obs


def goal_of(obs: Any) -> np.ndarray | None:
    return obs.get("goal") if isinstance(obs, dict) else None


def index_of(text: str, actions: Sequence[str]) -> int:
    """The index of a canonical action text, or a ValueError listing the accepted ones."""
    try:
        return list(actions).index(text)
    except ValueError:
        raise ValueError(f"action {text!r} is not one of the env's canonical actions {list(actions)}") from None
