"""Mainstream RL tools on every env id with its default arguments.

Gymnasium's `check_env`, Stable-Baselines3's `check_env` and a few PPO steps, and
`gym.make_vec` in its three modes, each on the registered defaults. The imagined envs
run on the model-free `FakeSimulator`, put in the process-wide simulator cache under the
default key, so `gym.make(env_id)` with no arguments uses it; the real twins run their
own simulators and skip when those are not installed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from fakes import FakeSimulator
from gymnasium.utils.env_checker import check_env

from bagel_world.envs import ENV_IDS
from bagel_world.envs import base as envs_base
from bagel_world.sims import REAL_ENVS, missing_packages
from bagel_world.simulator.base import StepOutput
from bagel_world.simulator.tasks import default_templates

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


# ---- gym.make_vec in its three modes -------------------------------------------------------
TESTS = Path(__file__).resolve().parent

# Runs in a fresh interpreter (so a hang is bounded by the subprocess timeout): puts a fake
# in the default simulator slot, makes a 2-env vector env of each id, resets and steps it.
ASYNC_CODE = """
import sys
sys.path.insert(0, {tests!r})
import gymnasium as gym
import bagel_world, bagel_world.sims
from bagel_world.envs import base
from bagel_world.simulator.tasks import default_templates
from fakes import FakeSimulator

class ModelInProcess(FakeSimulator):  # stands for a LocalSimulator: a torch model in this process
    in_process_model = True
    def __init__(self, templates):
        super().__init__(templates)
        from bagel_world.forking import mark_unforkable
        mark_unforkable("torch", "a BAGEL model in torch")

sim_cls = ModelInProcess if {model_in_process!r} else FakeSimulator
base._SIMULATORS[(None, None, None)] = sim_cls(default_templates(large=False))
for env_id in {ids!r}:
    imagined = env_id in bagel_world.envs.ENV_IDS
    envs = gym.make_vec(env_id, 2, vectorization_mode="async", **{kwargs})
    envs.reset(seed=0)
    for _ in range(2):
        envs.step(envs.action_space.sample())
    envs.close()
    print("ok", env_id, flush=True)
"""


def _run_async(ids, kwargs="{}", model_in_process=False, timeout=90):
    code = ASYNC_CODE.format(tests=str(TESTS), ids=tuple(ids), kwargs=kwargs, model_in_process=model_in_process)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_make_vec_sync_and_default_mode_on_the_defaults(default_sim, env_id):
    _needs(env_id)
    modes = ["sync", None] if env_id in ENV_IDS else ["sync"]  # None: the id's default (vector_entry_point)
    for mode in modes:
        envs = gym.make_vec(env_id, 2, vectorization_mode=mode)
        try:
            envs.reset(seed=0)
            for _ in range(2):
                obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
            assert reward.shape == (2,) and envs.observation_space.contains(obs)
        finally:
            envs.close()


def test_async_make_vec_of_imagined_envs_works_with_the_default_context():
    # A simulator that is not a model in this process (a fake here, a server backend in
    # practice) survives fork(): the default start method works.
    out = _run_async(ENV_IDS)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok") == len(ENV_IDS)


@pytest.mark.slow
def test_async_make_vec_with_spawn_works():
    ids = [i for i in ALL_IDS if i in ENV_IDS or not missing_packages(TASK_OF[i])]
    # The spawned workers cannot see the parent's simulator slot: hand them the fake.
    kwargs = ("dict(vector_kwargs={'context': 'spawn'}, "
              "**({'simulator': FakeSimulator(default_templates(large=False))} if imagined else {}))")
    out = _run_async(ids, kwargs=kwargs, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok") == len(ids)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_async_make_vec_fails_fast_naming_the_fix_where_fork_would_hang(env_id):
    _needs(env_id)
    # The parent builds one env to read the spaces: a model in torch (imagined envs) or a
    # GL context (real twins); forked workers would hang on them, and raise instead.
    t0 = time.perf_counter()
    out = _run_async([env_id], model_in_process=True)
    assert out.returncode != 0 and time.perf_counter() - t0 < 60
    assert "cannot run in a process forked from one that holds" in out.stderr, out.stderr[-3000:]
    assert "vector_kwargs={'context': 'spawn'}" in out.stderr
    if env_id in ENV_IDS:
        assert "vectorization_mode='vector_entry_point'" in out.stderr


# ---- one interface for the imagined envs and their real twins --------------------------------
SHARED_KWARGS = {"action_mode": "discrete", "render_mode": "rgb_array", "max_action_length": 64,
                 "report_latency": True, "resolution": (64, 64)}


@pytest.mark.parametrize("task", sorted(REAL_ENVS))
def test_twins_swap_for_imagined_envs_by_id(default_sim, task):
    real_id = REAL_ENVS[task][0]
    _needs(real_id)
    imagined_id = real_id.replace("Real", "")
    pair = [gym.make(imagined_id, **SHARED_KWARGS), gym.make(real_id, **SHARED_KWARGS)]
    try:
        imagined, real = (e.unwrapped for e in pair)
        assert imagined.get_action_meanings() == real.get_action_meanings() == list(imagined.canonical_actions)
        assert imagined.metadata["render_fps"] == real.metadata["render_fps"]
        assert imagined.action_space == real.action_space and imagined.observation_space == real.observation_space
        for env in pair:
            info = env.reset(seed=0)[1]
            assert {"frame_index", "is_success"} <= set(info), (env.spec.id, sorted(info))
            info = env.step(0)[-1]
            assert {"frame_index", "is_success", "action_text", "step_latency_s"} <= set(info), env.spec.id
            assert info["action_text"] == env.unwrapped.get_action_meanings()[0]
        # Text mode: samples are the task's canonical commands on both sides.
        text = [gym.make(i, max_action_length=64).action_space for i in (imagined_id, real_id)]
        for space in text:
            space.seed(0)
            assert {space.sample() for _ in range(20)} <= set(imagined.get_action_meanings())
    finally:
        for env in pair:
            env.close()
    vec = gym.make_vec(real_id, 2, vectorization_mode="vector_entry_point", resolution=(32, 32))
    vec.reset(seed=0)
    vec.step(vec.action_space.sample())
    vec.close()


def test_imagined_resolution_other_than_the_models_is_refused(default_sim):
    with pytest.raises(ValueError, match=r"resolution=\(32, 32\).*\(64, 64\).*ResizeObservation"):
        gym.make("BagelNavigate-v0", resolution=(32, 32))


# ---- render_mode="human" -----------------------------------------------------------------------
def _stub_pygame(monkeypatch):
    """A stand-in pygame module, recording the calls (pygame itself is optional)."""
    import importlib.machinery
    from unittest import mock

    stub = mock.MagicMock()
    stub.__spec__ = importlib.machinery.ModuleSpec("pygame", None)
    stub.display.set_mode.return_value.get_size.return_value = (256, 256)
    monkeypatch.setitem(sys.modules, "pygame", stub)
    return stub


@pytest.mark.parametrize("env_id", ["BagelNavigate-v0", "BagelMultiviewReal-v0"])
def test_human_render_mode(default_sim, monkeypatch, env_id):
    _needs(env_id)
    env_class = gym.spec(env_id).entry_point
    env_class = getattr(importlib.import_module(env_class.split(":")[0]), env_class.split(":")[1])
    monkeypatch.setitem(sys.modules, "pygame", None)  # as if pygame were not installed
    with pytest.raises(ValueError, match=r"render_mode='human'.*pip install pygame.*render_mode='rgb_array'"):
        env_class(render_mode="human")
    # With pygame (a stub here), the envs show their frames themselves.
    stub = _stub_pygame(monkeypatch)
    monkeypatch.setitem(env_class.metadata, "render_modes", ["rgb_array", "human"])
    env = gym.make(env_id, render_mode="human", resolution=(64, 64))
    assert not isinstance(env, gym.wrappers.HumanRendering)  # ours, not gymnasium's fallback
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert env.render() is None
    assert stub.display.flip.call_count == 3 and stub.display.set_mode.call_args.args == ((256, 256),)
    env.close()
    stub.quit.assert_called_once()


# ---- Stable-Baselines3 -------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_check_env_and_a_few_ppo_steps_in_discrete_mode(default_sim, env_id):
    _needs(env_id)
    sb3 = pytest.importorskip("stable_baselines3", reason="pip install 'bagel-world[rl]'")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, action_mode="discrete")
    try:
        sb3_check_env(env, warn=False)
        policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "CnnPolicy"
        # A tiny network and rollout: this checks the plumbing, not learning.
        extractor = {"cnn_output_dim": 8} if policy == "MultiInputPolicy" else {"features_dim": 8}
        kwargs = {"features_extractor_kwargs": extractor, "net_arch": []}
        model = sb3.PPO(policy, env, n_steps=4, batch_size=4, n_epochs=1, policy_kwargs=kwargs, device="cpu", seed=0)
        model.learn(total_timesteps=4)
    finally:
        env.close()


def test_array_actions_in_text_mode_name_the_discrete_mode(default_sim):
    env = gym.make("BagelNavigate-v0")
    env.reset(seed=0)
    for action in (np.array(["move forward 0.5 m"]), np.int64(0), 3):
        with pytest.raises(ValueError, match=r"a text action must be a str.*action_mode='discrete'"):
            env.step(action)
    env.close()


# ---- FutureFrame: an episode an agent can improve ----------------------------------------------
def test_future_frame_default_episodes_run_to_the_time_limit(default_sim):
    env = gym.make("BagelFutureFrame-v0", action_mode="discrete", success_threshold=0.01)  # every step a "yes"
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, info = env.step(0)
        steps += 1
        if terminated or truncated:
            break
    assert info["is_success"] and not terminated and truncated and steps == gym.spec("BagelFutureFrame-v0").max_episode_steps
    env.close()


def test_future_frame_real_default_return_rewards_pushing_over_waiting():
    _needs("BagelFutureFrameReal-v0")
    env = gym.make("BagelFutureFrameReal-v0", action_mode="discrete", resolution=(32, 32))
    meanings = env.unwrapped.get_action_meanings()
    push = [meanings.index("push the red ball left"), meanings.index("push the blue box right")]
    returns = {"wait": [], "push": []}
    for seed in range(3):
        for policy in returns:
            env.reset(seed=seed)
            total, done, t = 0.0, False, 0
            while not done:
                action = meanings.index("wait 0.5 s") if policy == "wait" else push[t % 2]
                _, reward, terminated, truncated, _ = env.step(action)
                total, done, t = total + reward, terminated or truncated, t + 1
            assert t == 32  # no episode ends early
            returns[policy].append(total)
    env.close()
    assert np.mean(returns["push"]) > np.mean(returns["wait"]) + 8, returns
