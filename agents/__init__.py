"""Agents that act in imagined and real worlds (installed as `bagel_world.agents`).

| agent                 | module          | sees                              | acts in              |
|-----------------------|-----------------|-----------------------------------|----------------------|
| `RandomAgent`         | random_agent.py | nothing                           | imagined or real     |
| `scripted_agent(task)`| scripted.py     | the real simulator's true state   | real only            |
| `CEMPlanner`          | planner.py      | frame + goal; imagined rollouts   | imagined or real     |
| `ModelJudgedPolicy`   | vlm_policy.py   | frame + goal through BAGEL's VLM  | imagined or real     |
| `PPOAgent`            | ppo.py          | frame + goal (a CNN trained by    | imagined or real     |
|                       |                 | PPO purely in imagination)        |                      |

All act through the same small interface (`Agent.reset(env, obs, info, seed)`,
`Agent.act(obs, info) -> int`, `Agent.close()`) with discrete canonical actions.
`bagel_world.evaluate_agents` measures them in the real twins. Importing this package is
light: each module (and torch, Stable-Baselines3) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Agent": "base",
    "canonical_actions": "base",
    "RandomAgent": "random_agent",
    "ScriptedAgent": "scripted",
    "scripted_agent": "scripted",
    "CEMPlanner": "planner",
    "PlanResult": "planner",
    "ModelJudgedPolicy": "vlm_policy",
    "PPOAgent": "ppo",
    "PPOArgs": "ppo",
    "SB3VecEnv": "ppo",
    "train_ppo": "ppo",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"bagel_world.agents.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bagel_world.agents' has no attribute {name!r}")
