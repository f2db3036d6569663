"""Mainstream RL tools on every env id with its default arguments.

Gymnasium's `check_env`, Stable-Baselines3's `check_env` and a few PPO steps, and
`gym.make_vec` in its three modes, each on the registered defaults. The imagined envs
run on the model-free `FakeSimulator`, put in the process-wide simulator cache under the
default key, so `gym.make(env_id)` with no arguments uses it; the real twins run their
own simulators and skip when those are not installed.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from bagel_world.envs import ENV_IDS
from bagel_world.envs import base as envs_base
from bagel_world.sims import REAL_ENVS, missing_packages
from bagel_world.simulator.base import StepOutput
from bagel_world.simulator.tasks import default_templates
from fakes import FakeSimulator

REAL_IDS = tuple(env_id for env_id, *_ in REAL_ENVS.values())
TASK_OF = {env_id: task for task, (env_id, *_) in REAL_ENVS.items()}
ALL_IDS = ENV_IDS + REAL_IDS


class WallClockSimulator(FakeSimulator):
    """A fake that reports wall time as step latency, as the real simulators do."""

    def step(self, session_ids, actions, seeds):
        t0 = time.perf_counter()
        out = super().step(session_ids, actions, seeds)
        dt = time.perf_counter() - t0 + 1e-9
        return [StepOutput(frame=o.frame, text=o.text, latency_s=dt, frame_index=o.frame_index) for o in out]


@pytest.fixture
def default_sim(monkeypatch):
    """The simulator `gym.make(env_id)` gets with no arguments: a wall-clock fake."""
    sim = WallClockSimulator(default_templates(large=False))
    monkeypatch.setitem(envs_base._SIMULATORS, (None, None, None), sim)
    return sim


def _needs(env_id: str) -> None:
    if env_id in TASK_OF:
        missing = missing_packages(TASK_OF[env_id])
        if missing:
            pytest.skip(f"{env_id} needs {missing}; pip install 'bagel-world[sims]'")


# ---- Gymnasium check_env -------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env_passes_on_the_defaults(default_sim, env_id):
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped)
        env.reset(seed=0)
        info = env.step(env.action_space.sample())[-1]
        assert "step_latency_s" not in info  # wall time is opt-in
    finally:
        env.close()


def test_latency_is_reported_when_asked_for(default_sim):
    env = gym.make("BagelNavigate-v0", report_latency=True)
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[-1]["step_latency_s"] > 0
    env.close()
