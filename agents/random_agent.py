"""The random baseline: a uniformly drawn canonical action every step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from bagel_world.agents.base import Agent, canonical_actions


class RandomAgent(Agent):
    """Uniform over the env's canonical actions; `reset(seed=s)` fixes the draws."""

    name = "random"

    def __init__(self, seed: int | None = None):
        self._rng = np.random.default_rng(seed)
        self._n = 0

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:
        self._n = len(canonical_actions(env))
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        if self._n == 0:
            raise RuntimeError("call reset(env, obs, info) before act()")
        return int(self._rng.integers(self._n))
