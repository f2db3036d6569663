"""Batched vector envs: N imagined worlds stepped through ONE `Simulator.step` call per step.

Made by ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` (the
default mode for these ids). The N sub-environments are ordinary task envs sharing one
simulator; the vector env gathers their action texts and noise seeds and makes a single
batched call, so the model runs one batch per denoising step.

Seeding: ``reset(seed=s)`` seeds sub-env i with ``s + i`` (as `SyncVectorEnv` does), so
sub-env i gives exactly the frames of a single env reset with ``seed=s + i`` and given
the same actions. A list of N seeds is also accepted.

Autoreset: `AutoresetMode.NEXT_STEP`. When sub-env i terminates or truncates at step t,
the step after it resets sub-env i (its action is ignored) and returns the new episode's
first observation with reward 0, terminated and truncated False and the reset info.
Truncation after ``max_episode_steps`` (from the registration) is done here, as
`TimeLimit` does for a single env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from bagel_world.envs.base import RENDER_FPS, BagelWorldEnv, shared_simulator
from bagel_world.envs.future_frame import BagelFutureFrameEnv
from bagel_world.envs.manipulate import BagelManipulateEnv
from bagel_world.envs.multiview import BagelMultiviewEnv
from bagel_world.envs.navigate import BagelNavigateEnv
from bagel_world.simulator.base import Simulator


class BagelVectorEnv(VectorEnv):
    """N sub-envs of one task class, stepped in one simulator batch. See the module doc."""

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"], "render_fps": RENDER_FPS, "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    env_class: ClassVar[type[BagelWorldEnv]] = BagelWorldEnv

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        simulator: Simulator | None = None,
        checkpoint=None,
        backend: str | None = None,
        device=None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        if simulator is not None and (checkpoint is not None or backend is not None or device is not None):
            raise ValueError("pass either simulator= or checkpoint=/backend=/device=, not both")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported by a vector env; accepted: None, "
                             "'rgb_array' (render() gives one frame per sub-env)")
        sim = simulator if simulator is not None else shared_simulator(checkpoint, backend, device)
        self.envs = [self.env_class(simulator=sim, render_mode=render_mode, **env_kwargs) for _ in range(num_envs)]
        self.simulator = sim
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._autoreset = np.zeros(self.num_envs, np.bool_)
        self._obs: list[Any] = [None] * self.num_envs  # each sub-env's latest observation

    # ---- Gymnasium VectorEnv API ------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all sub-envs (or those in ``options["reset_mask"]``); other options go to each."""
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, np.bool_)))
        if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask!r}")
        seeds = self._sub_seeds(seed)
        if isinstance(seed, (int, np.integer)):
            super().reset(seed=int(seed))  # seeds self.np_random too
        idx = np.flatnonzero(mask).tolist()
        results = self.env_class._reset_batch(
            [self.envs[i] for i in idx], [seeds[i] for i in idx], [options] * len(idx)
        )
        infos: dict[str, Any] = {}
        for i, (obs, info) in zip(idx, results):
            self._obs[i] = obs
            infos = self._add_info(infos, info, i)
        self._elapsed[idx] = 0
        self._autoreset[idx] = False
        return self._batched_obs(), infos

    def step(self, actions):
        """One batched simulator step for every sub-env that is not autoresetting."""
        # 1. Check every action first: a bad one raises before any state changes.
        acts = self._unbatch_actions(actions)
        active = [i for i in range(self.num_envs) if not self._autoreset[i]]
        texts = {}
        for i in active:
            try:
                texts[i] = self.envs[i]._action_to_text(acts[i])
            except ValueError as e:
                raise ValueError(f"sub-env {i}: {e}") from None
        for i in range(self.num_envs):
            if self.envs[i]._sid is None:
                raise RuntimeError("call reset() before step()")
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, np.bool_)
        truncated = np.zeros(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        # 2. NEXT_STEP autoreset: sub-envs that ended last step start a new episode instead.
        resetting = np.flatnonzero(self._autoreset).tolist()
        if resetting:
            results = self.env_class._reset_batch([self.envs[i] for i in resetting], [None] * len(resetting),
                                                  [None] * len(resetting))
            for i, (obs, info) in zip(resetting, results):
                self._obs[i] = obs
                infos = self._add_info(infos, info, i)
                self._elapsed[i] = 0
        # 3. Everyone else: one simulator.step call for the whole batch.
        if active:
            results = self.env_class._step_batch([self.envs[i] for i in active], [texts[i] for i in active])
            for i, (obs, reward, term, trunc, info) in zip(active, results):
                self._elapsed[i] += 1
                limit = self.max_episode_steps is not None and self._elapsed[i] >= self.max_episode_steps
                self._obs[i], rewards[i], terminated[i], truncated[i] = obs, reward, term, trunc or limit
                infos = self._add_info(infos, info, i)
        self._autoreset = terminated | truncated
        return self._batched_obs(), rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray | None, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(e.render() for e in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for e in self.envs:
            e.close()

    # ---- helpers ------------------------------------------------------------------------------
    def _sub_seeds(self, seed) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"reset got {len(seeds)} seeds for {self.num_envs} sub-envs; give an int or one per sub-env"
            )
        return seeds

    def _unbatch_actions(self, actions) -> list[Any]:
        if isinstance(actions, str) or not hasattr(actions, "__len__"):
            raise ValueError(
                f"actions must be a sequence of {self.num_envs} actions (one per sub-env), got {actions!r}"
            )
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} sub-envs")
        return list(actions)

    def _batched_obs(self):
        # A fresh array every call: callers may keep what we return.
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, self._obs, out)


class BagelNavigateVectorEnv(BagelVectorEnv):
    """Vector env of `BagelNavigateEnv` (BagelNavigate-v0)."""

    env_class = BagelNavigateEnv


class BagelMultiviewVectorEnv(BagelVectorEnv):
    """Vector env of `BagelMultiviewEnv` (BagelMultiview-v0)."""

    env_class = BagelMultiviewEnv


class BagelFutureFrameVectorEnv(BagelVectorEnv):
    """Vector env of `BagelFutureFrameEnv` (BagelFutureFrame-v0)."""

    env_class = BagelFutureFrameEnv


class BagelManipulateVectorEnv(BagelVectorEnv):
    """Vector env of `BagelManipulateEnv` (BagelManipulate-v0)."""

    env_class = BagelManipulateEnv
