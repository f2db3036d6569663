"""Gymnasium environments over a BAGEL world model: every env id is registered here.

``import bagel_world`` registers the ids; so does naming the module in the id, with no
prior import::

    import gymnasium as gym
    env = gym.make("bagel_world:BagelNavigate-v0")          # imports bagel_world first
    envs = gym.make_vec("bagel_world:BagelNavigate-v0", num_envs=8)  # one model batch per step

Registering imports nothing heavy (entry points are strings): the model is loaded when
the first env is made, and shared by every env of the process that names the same
(checkpoint, backend, device).
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

from bagel_world.simulator.tasks import MAX_EPISODE_STEPS

# id: (module = task name, env class, vector env class)
_ENVS = {
    "BagelNavigate-v0": ("navigate", "BagelNavigateEnv", "BagelNavigateVectorEnv"),
    "BagelMultiview-v0": ("multiview", "BagelMultiviewEnv", "BagelMultiviewVectorEnv"),
    "BagelFutureFrame-v0": ("future_frame", "BagelFutureFrameEnv", "BagelFutureFrameVectorEnv"),
    "BagelManipulate-v0": ("manipulate", "BagelManipulateEnv", "BagelManipulateVectorEnv"),
}

ENV_IDS = tuple(_ENVS)
TASK_ENV_IDS = {module: env_id for env_id, (module, _, _) in _ENVS.items()}  # task -> its imagined env id

for _id, (_module, _cls, _vec_cls) in _ENVS.items():
    if _id not in gym.registry:  # re-importing (e.g. importlib.reload) must not re-register
        gym.register(
            id=_id,
            entry_point=f"bagel_world.envs.{_module}:{_cls}",
            vector_entry_point=f"bagel_world.envs.vector:{_vec_cls}",
            max_episode_steps=MAX_EPISODE_STEPS[_module],
        )

# The classes, imported on first use so that registering stays light.
_EXPORTS = {
    "BagelWorldEnv": "base",
    "ActionText": "base",
    "shared_simulator": "base",
    "clear_simulator_cache": "base",
    "BagelVectorEnv": "vector",
    **{cls: module for module, cls, _ in _ENVS.values()},
    **{vec: "vector" for _, _, vec in _ENVS.values()},
}

__all__ = ["ENV_IDS", "TASK_ENV_IDS", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"bagel_world.envs.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bagel_world.envs' has no attribute {name!r}")
