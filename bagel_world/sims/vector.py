"""Vector entry points of the real twins, so `gym.make_vec` takes the same modes as on the imagined envs.

A real simulator has no batched step, so the twin's vector env is a `SyncVectorEnv` of N
twins, each under `TimeLimit(max_episode_steps)` as a single `gym.make` would give it,
autoresetting in Gymnasium's `NEXT_STEP` mode like the imagined vector envs. Seeding
follows `SyncVectorEnv`: ``reset(seed=s)`` seeds sub-env i with ``s + i``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv


class RealVectorEnv(SyncVectorEnv):
    """N real twins of one id, stepped one after the other. See the module doc."""

    env_id: ClassVar[str] = ""

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, **env_kwargs: Any):
        if not self.env_id:
            raise TypeError("RealVectorEnv is abstract; use gym.make_vec with a real twin's id")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")

        def make() -> gym.Env:
            return gym.make(self.env_id, max_episode_steps=max_episode_steps, **env_kwargs)

        super().__init__([make] * int(num_envs))


class BagelNavigateRealVectorEnv(RealVectorEnv):
    env_id = "BagelNavigateReal-v0"


class BagelMultiviewRealVectorEnv(RealVectorEnv):
    env_id = "BagelMultiviewReal-v0"


class BagelFutureFrameRealVectorEnv(RealVectorEnv):
    env_id = "BagelFutureFrameReal-v0"


class BagelManipulateRealVectorEnv(RealVectorEnv):
    env_id = "BagelManipulateReal-v0"
