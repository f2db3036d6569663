"""Agents: planner (rigged scores, forks), model-judged policy, PPO in imagination, baselines.

Fast by design: the FakeSimulator or the tiny random checkpoint, short budgets. Tests that
need a real simulator skip when the `[sims]` packages are missing; PPO tests skip without
Stable-Baselines3 (the `[rl]` extra).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from fakes import FakeSimulator, LocatingMixin

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.agents import CEMPlanner, ModelJudgedPolicy, RandomAgent, canonical_actions, scripted_agent
from bagel_world.evaluate_agents import EvalResult, evaluate_agent, load_results, markdown_table
from bagel_world.evaluate_agents import main as evaluate_main
from bagel_world.simulator.base import StepOutput
from bagel_world.simulator.progress import judge_frames
from bagel_world.simulator.tasks import default_templates

TURN_LEFT = 2  # index of "turn left 30 degrees" among the navigation canonical actions


def fake() -> FakeSimulator:
    return FakeSimulator(default_templates(large=False))


class RiggedSimulator(FakeSimulator):
    """Frames that count the actions taken: channel 0 grows by 20 per "turn left 30 degrees"."""

    def step(self, session_ids, actions, seeds):
        self.step_calls += 1
        out = []
        for sid, action in zip(session_ids, actions, strict=True):
            s = self._sessions[sid]
            nxt = s["frames"][-1].copy()
            if action == "turn left 30 degrees":
                nxt[..., 0] = np.minimum(nxt[..., 0].astype(np.int16) + 20, 255).astype(np.uint8)
            s["frames"].append(nxt)
            out.append(StepOutput(frame=nxt.copy(), text=None, latency_s=0.0, frame_index=len(s["frames"]) - 1))
        return out


def needs_sim(task: str) -> None:
    from bagel_world.sims import missing_packages

    missing = missing_packages(task)
    if missing:
        pytest.skip(f"real simulator for {task!r} not installed (missing {missing})")


def needs_sb3() -> None:
    if importlib.util.find_spec("stable_baselines3") is None:
        pytest.skip("stable-baselines3 not installed (pip install 'bagel-world[rl]')")


def nav_env(sim, **kwargs) -> gym.Env:
    return gym.make("BagelNavigate-v0", simulator=sim, action_mode="discrete", report_latency=False, **kwargs)


def redness(frames: np.ndarray, goal) -> np.ndarray:
    return frames[..., 0].astype(np.float64).mean(axis=(1, 2))


# ---- import cost ---------------------------------------------------------------------------
def test_importing_agents_is_light():
    code = ("import sys, bagel_world.agents as a; a.RandomAgent; a.scripted_agent\n"
            "assert 'stable_baselines3' not in sys.modules and 'torch' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- planner ---------------------------------------------------------------------------------
@pytest.mark.parametrize("choose", ["mode", "best"])
def test_planner_picks_the_action_a_rigged_score_prefers(choose):
    sim = RiggedSimulator(default_templates(large=False))
    env = nav_env(sim)
    obs, info = env.reset(seed=0)
    planner = CEMPlanner(candidates=24, horizon=3, iterations=3, elites=4, score_fn=redness, choose=choose,
                         seed=0, progress=False)
    planner.reset(env, obs, info, seed=0)
    before_calls, before_sessions = sim.step_calls, len(sim._sessions)
    plan = planner.plan(obs)
    assert plan.action == TURN_LEFT and plan.text == "turn left 30 degrees"
    assert plan.sequence.tolist() == [TURN_LEFT] * 3  # the best sequence turns left every step
    assert plan.probs.shape == (3, 6) and np.allclose(plan.probs.sum(1), 1.0)
    assert plan.predicted_next is not None and plan.predicted_next[..., 0].mean() > obs["frame"][..., 0].mean()
    # one batched simulator.step per horizon step and iteration; every fork closed again
    assert sim.step_calls - before_calls == 3 * 3
    assert len(sim._sessions) == before_sessions
    assert planner.act(obs, info) == TURN_LEFT  # the Agent API gives the same choice


def test_planner_tries_every_sequence_once_when_the_candidates_cover_them():
    sim = RiggedSimulator(default_templates(large=False))
    env = nav_env(sim)
    obs, info = env.reset(seed=0)
    scored: list[int] = []

    def score(frames, goal):
        scored.append(len(frames))
        return redness(frames, goal)

    planner = CEMPlanner(candidates=36, horizon=2, iterations=3, elites=1, score_fn=score, seed=0, progress=False)
    planner.reset(env, obs, info, seed=0)
    before = sim.step_calls
    plan = planner.plan(obs)
    assert plan.sequence.tolist() == [TURN_LEFT, TURN_LEFT] and plan.action == TURN_LEFT
    # 6 x 6 sequences in ONE iteration: one batched step per horizon step, 36 distinct end frames
    assert sim.step_calls - before == 2 and scored == [36] and len(plan.iteration_scores) == 1
    # every candidate's score is kept, the best one on the chosen sequence
    assert plan.candidate_sequences.shape == (36, 2) and plan.candidate_scores.shape == (36,)
    assert len({tuple(s) for s in plan.candidate_sequences.tolist()}) == 36
    top = int(np.argmax(plan.candidate_scores))
    assert plan.candidate_sequences[top].tolist() == plan.sequence.tolist()
    assert plan.candidate_scores[top] == plan.score
    # score_frames is the same score, on any frames
    frames = np.stack([obs["frame"], np.roll(obs["frame"], 1, axis=0)])
    np.testing.assert_array_equal(planner.score_frames(frames, obs.get("goal")), redness(frames, obs.get("goal")))
    with pytest.raises(ValueError, match="elites < 6 or choose='best'"):
        CEMPlanner(candidates=6, horizon=1, elites=6, score_fn=score, progress=False).reset(env, obs, info)


def test_planner_pixel_metric_moves_toward_the_goal_image():
    sim = RiggedSimulator(default_templates(large=False))
    env = nav_env(sim)
    obs, info = env.reset(seed=0)
    start = obs["frame"]
    goal = start.copy()
    goal[..., 0] = np.minimum(start[..., 0].astype(np.int16) + 40, 255).astype(np.uint8)  # two left turns away
    obs, info = env.reset(options={"start_image": start, "goal_image": goal})
    planner = CEMPlanner(candidates=32, horizon=2, iterations=3, elites=4, metric="pixel", seed=1, progress=False)
    planner.reset(env, obs, info, seed=1)
    plan = planner.plan(obs)
    assert plan.sequence.tolist() == [TURN_LEFT, TURN_LEFT] and plan.action == TURN_LEFT
    assert plan.score == pytest.approx(0.0, abs=1e-6)  # the imagined end frame IS the goal


def test_planner_judged_metric_follows_the_judge_toward_the_goal():
    sim = RiggedSimulator(default_templates(large=False))
    env = nav_env(sim)
    start = np.zeros((64, 64, 3), np.uint8)
    goal = start.copy()
    goal[..., 0] = 210  # every left turn (+20 red) brings the frame closer: the fake judge says nearer
    obs, info = env.reset(options={"start_image": start, "goal_image": goal})
    planner = CEMPlanner(candidates=32, horizon=3, iterations=3, elites=4, seed=0, progress=False)  # auto: judged
    planner.reset(env, obs, info, seed=0)
    before = len(sim.score_calls)
    plan = planner.plan(obs)
    assert plan.sequence.tolist() == [TURN_LEFT] * 3 and plan.action == TURN_LEFT
    # one batched call per question and iteration, with the goal image; every session closed
    assert sim.score_calls[before:] == [("How far away is the goal view?", tuple(
        f"{c:g}" for c in (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0)), True),
        ("Have you reached the goal view?", ("yes", "no"), True)] * 3
    assert len(sim._sessions) == 1  # only the env's own session
    # score = -judged distance + reached_weight * P(reached); weight 0 asks the distance only
    frames = np.stack([start, goal])
    d, p = judge_frames(sim, "navigate", frames, [goal, goal])
    assert np.allclose(planner._score(frames, goal, None), -d + p)
    planner.reached_weight = 0.0
    before = len(sim.score_calls)
    assert np.allclose(planner._score(frames, goal, None), -d)
    assert [q for q, _, _ in sim.score_calls[before:]] == ["How far away is the goal view?"]
    with pytest.raises(ValueError, match="tasks with one"):
        CEMPlanner(metric="judged", progress=False).reset(
            gym.make("BagelManipulate-v0", simulator=fake(), action_mode="discrete"), *gym.make(
                "BagelManipulate-v0", simulator=fake(), action_mode="discrete").reset(seed=0))


class StepJudgeSimulator(RiggedSimulator):
    """A rigged step judge: the last step brought the agent closer by the drop of the mean
    absolute gap to the goal (in [0, 1] units, times 4), answered as a sharp distribution over
    the step bins; "reached" is the fake judge's."""

    def score(self, session_ids, question, answers, goals=None):
        from bagel_world.simulator.progress import STEP_QUESTION

        if question != STEP_QUESTION:
            return super().score(session_ids, question, answers, goals)
        self.score_calls.append((question, tuple(answers), goals is not None))
        centres = np.array([float(a) for a in answers])
        out = np.zeros((len(session_ids), len(answers)), np.float32)
        for i, sid in enumerate(session_ids):
            before, after = (f.astype(np.float64) for f in self._sessions[sid]["frames"][-2:])
            closer = 4 * (np.abs(before - goals[i]).mean() - np.abs(after - goals[i]).mean()) / 255.0
            logits = -50.0 * (centres - closer) ** 2
            out[i] = logits - np.log(np.exp(logits).sum())
        return out


def test_planner_step_metric_sums_the_judged_steps_of_each_rollout():
    from bagel_world.simulator.progress import REACHED_QUESTION, STEP_BINS, STEP_QUESTION, judge_steps

    sim = StepJudgeSimulator(default_templates(large=False))
    env = nav_env(sim)
    start = np.zeros((64, 64, 3), np.uint8)
    goal = start.copy()
    goal[..., 0] = 210  # every left turn (+20 red) is judged about 0.1 m closer
    obs, info = env.reset(options={"start_image": start, "goal_image": goal})
    planner = CEMPlanner(candidates=32, horizon=3, iterations=2, elites=4, metric="step", seed=0, progress=False)
    planner.reset(env, obs, info, seed=0)
    assert planner.resolved_metric == "step"
    before = len(sim.score_calls)
    plan = planner.plan(obs)
    assert plan.sequence.tolist() == [TURN_LEFT] * 3 and plan.action == TURN_LEFT
    # per iteration: the step question after each of the 3 batched steps, "reached" after the last
    answers = STEP_BINS["navigate"].answers
    assert [(q, len(a), g) for q, a, g in sim.score_calls[before:]] == (
        [(STEP_QUESTION, len(answers), True)] * 3 + [(REACHED_QUESTION, 2, True)]) * 2
    assert len(sim._sessions) == 1  # only the env's own session
    # the best score is three judged steps plus P(reached) at the end, as judge_steps gives them
    root = env.unwrapped.session_id
    sids = [sim.fork(root)]
    expected = 0.0
    for _ in range(3):
        sim.step(sids, ["turn left 30 degrees"], [0])
        expected += judge_steps(sim, "navigate", sids, [goal])[0]
    p = np.exp(sim.score(sids, REACHED_QUESTION, ("yes", "no"), goals=[goal])[0])
    assert plan.score == pytest.approx(expected + p[0] / p.sum(), abs=1e-6)
    assert 0.2 < expected < 0.35  # 3 steps of 0.105 (red is one channel of three), read through the bins
    sim.close(sids[0])
    # a step score is not a score of bare frames
    with pytest.raises(ValueError, match="judges steps taken in a session"):
        planner.score_frames(np.stack([start, goal]), goal)
    with pytest.raises(ValueError, match="step-progress judge"):
        CEMPlanner(metric="step", progress=False).reset(
            gym.make("BagelManipulate-v0", simulator=fake(), action_mode="discrete"), *gym.make(
                "BagelManipulate-v0", simulator=fake(), action_mode="discrete").reset(seed=0))


class LocatingSimulator(LocatingMixin, RiggedSimulator):
    """Rigged frames (red grows by 20 per left turn), located at x = 8 m x their red level."""


def test_location_bins_answer_and_read_back_a_place():
    from bagel_world.simulator.progress import LOCATE_QUESTIONS, LOCATION_BINS, located_distance

    bins = LOCATION_BINS["navigate"]
    assert bins.layout == "one_room" and bins.span == (0.0, 8.0)
    # 2.82 m from the green wall (x = 8), 0.1 m from the blue one (z = 0)
    assert [bins.answer(q, [5.18, 0.1, -67.0]) for q in LOCATE_QUESTIONS] == ["2.75", "0.25", "300"]
    assert np.allclose(bins.place(np.array([2.82]), np.array([0.1]), np.array([293.0])), [[5.18, 0.1, 293.0]])
    assert bins.answer(LOCATE_QUESTIONS[2], [0, 0, 353.0]) == "0"  # headings wrap around
    # the judged heading is the circular mean: half on 345, half on 0 -> 352.5, not 172.5
    logp = np.full(24, -60.0)
    logp[[0, 23]] = 0.0
    assert bins.expected_yaw(logp) == pytest.approx(352.5)
    d, yaw = located_distance(np.array([[1.0, 1.0, 350.0], [4.0, 5.0, 90.0]]), np.array([1.0, 4.0, 10.0]))
    assert np.allclose(d, [3.0, 10**0.5]) and np.allclose(yaw, [20.0, 80.0])
    with pytest.raises(ValueError, match="unknown location question"):
        bins.answers("Where is the box?")


def test_planner_located_metric_walks_toward_the_goal_place():
    from bagel_world.simulator.progress import LOCATE_QUESTIONS, judge_location_frames

    sim = LocatingSimulator(default_templates(large=False))
    env = nav_env(sim)
    start = np.zeros((64, 64, 3), np.uint8)
    goal = start.copy()
    goal[..., 0] = 150  # judged x 4.7 m; each left turn adds 20 red, 0.63 m of judged x
    obs, info = env.reset(options={"start_image": start, "goal_image": goal})
    planner = CEMPlanner(candidates=32, horizon=3, iterations=2, elites=4, metric="located", seed=0, progress=False)
    planner.reset(env, obs, info, seed=0)
    before = len(sim.score_calls)
    plan = planner.plan(obs)
    assert plan.sequence.tolist() == [TURN_LEFT] * 3 and plan.action == TURN_LEFT
    # the goal is located once per goal image; each iteration asks the 3 questions of all end frames
    asked = [q for q, _, g in sim.score_calls[before:]]
    assert asked == list(LOCATE_QUESTIONS) * 3 and not any(g for _, _, g in sim.score_calls[before:])
    assert len(sim._sessions) == 1  # only the env's own session
    planner.plan(obs)
    assert [q for q, _, _ in sim.score_calls[before:]] == list(LOCATE_QUESTIONS) * 5  # the goal's place is kept
    # the score is minus the located distance plus yaw_weight m per 180 degrees of heading
    frames = np.stack([start, goal])
    place = judge_location_frames(sim, "navigate", frames)
    assert np.allclose(place[:, 1:], [[4.0, 90.0], [4.0, 90.0]], atol=1e-3)
    assert np.allclose(planner.score_frames(frames, goal), [-(place[1, 0] - place[0, 0]), 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="location judge"):
        CEMPlanner(metric="located", progress=False).reset(
            gym.make("BagelManipulate-v0", simulator=fake(), action_mode="discrete"), *gym.make(
                "BagelManipulate-v0", simulator=fake(), action_mode="discrete").reset(seed=0))
    with pytest.raises(ValueError, match="yaw_weight"):
        CEMPlanner(metric="located", yaw_weight=-1.0)


def test_planner_explore_takes_random_steps_at_its_rate():
    """With `explore`, that share of the steps is a uniformly random action taken without
    planning; the rest are the plan's. At 0 every step is planned."""
    sim = LocatingSimulator(default_templates(large=False))
    env = nav_env(sim)
    start = np.zeros((64, 64, 3), np.uint8)
    goal = start.copy()
    goal[..., 0] = 150  # the plan is always "turn left" (see the test above)
    obs, info = env.reset(options={"start_image": start, "goal_image": goal})
    picks = {}
    for explore in (0.0, 0.5):
        planner = CEMPlanner(candidates=6, horizon=1, elites=1, metric="located", explore=explore, progress=False)
        planner.reset(env, obs, info, seed=3)
        picks[explore], planned = [], 0
        for _ in range(60):
            picks[explore].append(planner.act(obs, info))
            planned += planner.last_plan is not None
        picks[explore] = np.array(picks[explore])
        assert planned == 60 if explore == 0 else 15 < planned < 45
    assert (picks[0.0] == TURN_LEFT).all()
    off = (picks[0.5] != TURN_LEFT).mean()  # random steps land off the plan 5/6 of the time
    assert 0.25 < off < 0.6 and len(set(picks[0.5].tolist())) == 6
    for bad in (-0.1, 1.0, True):
        with pytest.raises(ValueError, match="explore"):
            CEMPlanner(explore=bad)


def test_planner_validates_its_knobs():
    with pytest.raises(ValueError, match="elites"):
        CEMPlanner(candidates=4, elites=5)
    with pytest.raises(ValueError, match="metric"):
        CEMPlanner(metric="lpips")
    with pytest.raises(ValueError, match="horizon"):
        CEMPlanner(horizon=0)
    for bad in (-1, True, float("inf")):
        with pytest.raises(ValueError, match=f"reached_weight must be a finite number >= 0, got {bad!r}"):
            CEMPlanner(reached_weight=bad)


def test_planner_forks_do_not_disturb_the_parent_session(tiny_engine):
    from bagel_world.simulator.local import LocalSimulator

    sim = LocalSimulator(tiny_engine)
    planned, control = nav_env(sim).unwrapped, nav_env(sim).unwrapped
    obs, info = planned.reset(seed=3)
    control.reset(seed=3)
    frame0 = sim.frame(planned.session_id)
    sessions = sim.num_sessions
    planner = CEMPlanner(candidates=6, horizon=2, iterations=2, elites=2, metric="feature", seed=0, progress=False)
    planner.reset(planned, obs, info, seed=0)
    plan = planner.plan(obs)  # feature metric: the model's own embed, centred on the scenario mean
    assert 0 <= plan.action < 6 and np.isfinite(plan.score)
    assert sim.num_sessions == sessions  # every fork closed
    np.testing.assert_array_equal(sim.frame(planned.session_id), frame0)  # parent frame unchanged
    # Later steps of the parent equal those of an env that never planned (same seeds).
    for a in (plan.action, 0):
        o1, r1, *_ = planned.step(a)
        o2, r2, *_ = control.step(a)
        assert np.abs(o1["frame"].astype(int) - o2["frame"].astype(int)).max() <= 1
        assert r1 == pytest.approx(r2, abs=1e-3)


def test_planner_acts_in_the_real_env_on_fresh_sessions(tiny_engine):
    needs_sim("navigate")
    from bagel_world.simulator.local import LocalSimulator

    sim = LocalSimulator(tiny_engine)
    res = evaluate_agent("planner", "navigate", episodes=1, seed0=0, simulator=sim, max_steps=2, progress=False,
                         planner_kwargs={"candidates": 4, "horizon": 2, "iterations": 1, "elites": 2,
                                         "progress": False})
    assert res.episodes == 1 and res.steps == [2] and np.isfinite(res.mean_return)
    assert sim.num_sessions == 0  # the per-step sessions on the real frame are closed


def test_planner_refuses_a_real_env_without_a_simulator():
    needs_sim("navigate")
    from bagel_world.evaluate_agents import make_real_env

    env = make_real_env("navigate")
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match="simulator"):
        CEMPlanner(progress=False).reset(env, obs, info)
    env.close()


# ---- model-judged policy -----------------------------------------------------------------------
@pytest.mark.parametrize("think", [False, True])
def test_model_judged_policy_scores_every_action(tiny_engine, think):
    env = nav_env(fake())
    obs, info = env.reset(seed=0)
    policy = ModelJudgedPolicy(engine=tiny_engine, think=think, max_think_tokens=4, seed=0)
    policy.reset(env, obs, info, seed=0)
    a = policy.act(obs, info)
    assert 0 <= a < len(canonical_actions(env))
    assert policy.last_scores.shape == (6,) and np.all(np.isfinite(policy.last_scores))
    assert a == int(np.argmax(policy.last_scores))
    assert (policy.last_thought is not None) == think


def test_model_judged_policy_needs_a_simulator_and_runs_over_http():
    with pytest.raises(ValueError, match="simulator="):
        ModelJudgedPolicy()
    pytest.importorskip("fastapi")
    from bagel_world.server import create_app
    from bagel_world.server.testing import run_in_thread
    from bagel_world.simulator.remote import RemoteSimulator

    env = nav_env(fake())
    obs, info = env.reset(seed=0)
    local = ModelJudgedPolicy(simulator=fake(), seed=0)
    with run_in_thread(create_app(fake())) as url:
        remote_sim = RemoteSimulator(url)
        remote = ModelJudgedPolicy(simulator=remote_sim, seed=0)
        for p in (local, remote):
            p.reset(env, obs, info, seed=0)
        # The same choice and scores through the HTTP API as in process (the fake's known judge).
        assert remote.act(obs, info) == local.act(obs, info)
        np.testing.assert_allclose(remote.last_scores, local.last_scores, rtol=1e-12)
        remote_sim.disconnect()


# ---- PPO in imagination ------------------------------------------------------------------------
def test_sb3_adapter_resets_finished_envs_in_the_same_step():
    needs_sb3()
    from bagel_world.agents.ppo import PPOArgs, make_imagined_vecenv

    venv = make_imagined_vecenv(PPOArgs(num_envs=2, max_episode_steps=2, seed=0), simulator=fake())
    obs = venv.reset()
    assert obs["frame"].shape == (2, 64, 64, 3)
    ended = np.zeros(2, bool)
    for _ in range(2):  # every episode ends within 2 steps (success or the time limit)
        obs, rewards, dones, infos = venv.step(np.array([0, 1]))
        for i in np.flatnonzero(dones):
            assert "terminal_observation" in infos[i] and "episode" in infos[i]  # + VecMonitor statistics
            assert infos[i]["TimeLimit.truncated"] == (not infos[i]["is_success"])
            assert not np.array_equal(obs["frame"][i], infos[i]["terminal_observation"]["frame"])
        ended |= dones
    assert ended.all()
    # The step after a reset is a real step of the new episode (no ignored autoreset step).
    obs, rewards, dones, infos = venv.step(np.array([2, 3]))
    assert all(i["frame_index"] == 1 for i, d in zip(infos, dones) if not d)
    venv.close()


def test_ppo_trains_in_imagination_and_saves_a_loadable_policy(tmp_path):
    needs_sb3()
    from bagel_world.agents.ppo import PPOAgent, PPOArgs, train_ppo

    args = PPOArgs(timesteps=256, num_envs=2, n_steps=64, batch_size=64, n_epochs=1, max_episode_steps=16,
                   save_every=128, out=str(tmp_path / "ppo"), verbose=0)
    path = train_ppo(args, simulator=fake())
    assert path.is_file() and (tmp_path / "ppo" / "args.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ppo" / "checkpoints").glob("*.zip"))  # periodic checkpoints
    assert list((tmp_path / "ppo" / "tb").rglob("events.out.tfevents.*"))  # TensorBoard logs
    agent = PPOAgent(path)
    env = nav_env(fake())
    obs, info = env.reset(seed=0)
    agent.reset(env, obs, info)
    for _ in range(3):
        a = agent.act(obs, info)
        assert 0 <= a < 6
        obs, _, _, _, info = env.step(a)


def test_ppo_resumes_from_its_newest_checkpoint(tmp_path):
    needs_sb3()
    from stable_baselines3 import PPO

    from bagel_world.agents.ppo import PPOArgs, latest_checkpoint, train_ppo

    args = PPOArgs(timesteps=128, num_envs=2, n_steps=32, batch_size=32, n_epochs=1, max_episode_steps=8,
                   save_every=64, out=str(tmp_path / "ppo"), verbose=0)
    train_ppo(args, simulator=fake())
    assert latest_checkpoint(tmp_path / "ppo").name == "ppo_128_steps.zip"
    path = train_ppo(dataclasses.replace(args, timesteps=256, resume=True), simulator=fake())
    assert PPO.load(path).num_timesteps == 256  # 128 more, not 256 from scratch
    assert latest_checkpoint(tmp_path / "ppo").name == "ppo_256_steps.zip"
    assert latest_checkpoint(tmp_path / "nothing") is None
    # The imagined-return curve spans both runs, in step order, and plots to a PNG.
    from bagel_world.agents.ppo import plot_training_curve, training_curve

    steps, values = training_curve(tmp_path / "ppo")
    assert steps[0] <= 64 and steps[-1] == 256 and (np.diff(steps) > 0).all() and np.isfinite(values).all()
    png = plot_training_curve(tmp_path / "ppo", tmp_path / "docs" / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files under"):
        training_curve(tmp_path / "nothing")


def test_ppo_starts_from_a_given_policy(tmp_path):
    needs_sb3()
    from stable_baselines3 import PPO

    from bagel_world.agents.ppo import PPOArgs, train_ppo

    args = PPOArgs(timesteps=64, num_envs=2, n_steps=32, batch_size=32, n_epochs=1, max_episode_steps=8,
                   save_every=0, out=str(tmp_path / "a"), verbose=0)
    first = train_ppo(args, simulator=fake())
    fresh = train_ppo(dataclasses.replace(args, seed=1, out=str(tmp_path / "fresh")), simulator=fake())
    second = train_ppo(dataclasses.replace(args, out=str(tmp_path / "b"), init=str(first)), simulator=fake())
    assert PPO.load(second).num_timesteps == 64  # `timesteps` more from the given policy

    def params(path):
        return torch.cat([p.detach().flatten() for p in PPO.load(path).policy.parameters()])

    a, b, c = params(first), params(second), params(fresh)
    assert (b - a).norm() < 0.2 * (c - a).norm()  # one update away from the init, not from a new draw


def test_evaluate_agent_finds_the_policy_shipped_with_the_checkpoint(tmp_path, tiny_ckpt, capsys):
    needs_sb3()
    needs_sim("navigate")
    import shutil

    from bagel_world.agents.ppo import PPOAgent, PPOArgs, train_ppo

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    # A missing shipped policy: the error names the task, the layout and what the checkpoint ships.
    with pytest.raises(FileNotFoundError, match=r"ships no PPO policy for task 'navigate' with layout 'one_room' "
                                                r"\(ppo-navigate-one_room.zip\); it ships none"):
        evaluate_agent("ppo", "navigate", 1, 0, ckpt, env_kwargs={"layout": "one_room"}, progress=False)
    from bagel_world.cli import main as cli_main

    assert cli_main(["evaluate-agent", "--agent", "ppo", "--layout", "one_room", "--checkpoint", str(ckpt),
                     "--episodes", "1", "--no-progress"]) == 2
    assert "ships no PPO policy for task 'navigate' with layout 'one_room'" in capsys.readouterr().err
    # Ship one (what examples/train_ppo.py writes: policy.zip and args.json) and evaluate it with no --policy.
    run = train_ppo(PPOArgs(timesteps=64, num_envs=2, n_steps=32, batch_size=32, n_epochs=1, max_episode_steps=8,
                            save_every=0, out=str(tmp_path / "ppo"), verbose=0), simulator=fake())
    (ckpt / "policies").mkdir()
    shutil.copy(run, ckpt / "policies" / "ppo-navigate-one_room.zip")
    shutil.copy(run.parent / "args.json", ckpt / "policies" / "ppo-navigate-one_room.json")
    res = evaluate_agent("ppo", "navigate", 1, 0, ckpt, max_steps=2, env_kwargs={"layout": "one_room"}, progress=False)
    assert res.settings["policy"] == str(ckpt / "policies" / "ppo-navigate-one_room.zip") and res.episodes == 1
    with pytest.raises(FileNotFoundError, match=r"it ships \['ppo-navigate-one_room.zip'\]"):
        evaluate_agent("ppo", "navigate", 1, 0, ckpt, progress=False)  # four_rooms: none shipped
    # A policy of another task is refused by name, not run on the wrong env.
    agent = PPOAgent(ckpt / "policies" / "ppo-navigate-one_room.zip")
    env = gym.make("BagelManipulate-v0", simulator=fake(), action_mode="discrete")
    with pytest.raises(ValueError, match="trained on task 'navigate', not 'manipulate'"):
        agent.reset(env, *env.reset(seed=0))
    # Without the args beside it the task is unknown; the action count still has to match.
    bare = tmp_path / "bare" / "policy.zip"
    bare.parent.mkdir()
    shutil.copy(run, bare)
    with pytest.raises(ValueError, match="the policy has 6 actions, the env 8 canonical ones"):
        PPOAgent(bare).reset(env, *env.reset(seed=0))


def test_real_scenarios_are_the_real_starts_and_goals():
    needs_sim("navigate")
    from bagel_world.sims import make_real, real_scenarios

    scen = real_scenarios("navigate", 2, seed=1000, progress=False, layout="one_room")
    env = make_real("navigate", layout="one_room")
    for i in range(2):
        obs, _ = env.reset(seed=1000 + i)
        assert np.array_equal(scen.frames[i], obs["frame"]) and np.array_equal(scen.goals[i], obs["goal"])
    env.close()
    imagined = nav_env(fake(), scenarios=scen)
    obs, info = imagined.reset(options={"scene_index": 1})
    assert np.array_equal(obs["goal"], scen.goals[1])


# ---- baselines in the real twin ----------------------------------------------------------------
def test_random_agent_runs_an_episode_in_the_real_env():
    needs_sim("navigate")
    res = evaluate_agent("random", "navigate", episodes=1, seed0=0, max_steps=8, progress=False)
    assert res.steps == [8] and res.success == [False] and len(res.returns) == 1


def test_scripted_navigation_reaches_goals_random_does_not():
    needs_sim("navigate")
    scripted = evaluate_agent("scripted", "navigate", episodes=3, seed0=0, progress=False)
    random = evaluate_agent("random", "navigate", episodes=3, seed0=0, progress=False)
    assert scripted.success_rate > random.success_rate
    assert scripted.mean_return > random.mean_return


@pytest.mark.parametrize("task", ["multiview", "future_frame", "manipulate"])
def test_scripted_agents_run_in_every_real_env(task):
    needs_sim(task)
    res = evaluate_agent("scripted", task, episodes=1, seed0=0, max_steps=8, progress=False)
    assert res.episodes == 1 and 1 <= res.steps[0] <= 8


def test_scripted_agent_refuses_an_imagined_env():
    env = nav_env(fake())
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match="real"):
        scripted_agent("navigate").reset(env, obs, info)


def test_random_agent_is_seeded():
    env = nav_env(fake())
    obs, info = env.reset(seed=0)
    draws = []
    for _ in range(2):
        agent = RandomAgent()
        agent.reset(env, obs, info, seed=5)
        draws.append([agent.act(obs, info) for _ in range(10)])
    assert draws[0] == draws[1] and set(draws[0]) <= set(range(6))


# ---- reporting ---------------------------------------------------------------------------------
def test_markdown_table_rows():
    r = EvalResult(agent="random", task="navigate", seeds=[0, 1], success=[True, False], steps=[10, 64],
                   returns=[1.5, -0.5], wall_s=37.0, command="bagel-world evaluate-agent --agent random")
    table = markdown_table([r])
    assert "| random | 50% (1/2) | 10.0 | +0.50 ± 1.00 | 2 | 0.50 | `bagel-world evaluate-agent --agent random` |" in table


def test_success_chart_draws_a_bar_per_row_with_its_interval(tmp_path):
    from PIL import Image

    from bagel_world.evaluate_agents import success_chart

    rows = [EvalResult(agent=a, task="navigate", seeds=list(range(20)), success=[i < k for i in range(20)],
                       steps=[30] * 20, returns=[0.0] * 20) for a, k in (("random", 0), ("planner", 9))]
    path = success_chart(rows, tmp_path / "c" / "s.png", labels=["random", "planner, L5"], target=0.6, title="t")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    bar = (abs(img[..., 0] - 0x4C) < 8) & (abs(img[..., 1] - 0x72) < 8) & (abs(img[..., 2] - 0xB0) < 8)
    assert bar.sum() > 500  # the planner's 45% bar is drawn; random's 0% draws none
    rows_with_bar = np.flatnonzero(bar.any(1))
    assert rows_with_bar.max() - rows_with_bar.min() < img.shape[0] / 3  # one bar, not two
    with pytest.raises(ValueError, match="1 labels for 2 result rows"):
        success_chart(rows, tmp_path / "x.png", labels=["one"])
    with pytest.raises(FileNotFoundError, match="no evaluate-agent results at"):
        load_results(tmp_path / "missing")


def test_paired_comparison_counts_discordant_episodes_on_the_same_seeds():
    from bagel_world.evaluate_agents import paired_comparison, paired_lines

    base = EvalResult(agent="random", task="navigate", seeds=[0, 1, 2, 3], success=[False, True, False, False],
                      steps=[64, 9, 64, 64], returns=[0.0, 1.5, -0.5, 0.0])
    plan = EvalResult(agent="planner", task="navigate", seeds=[0, 1, 2, 3], success=[True, True, True, False],
                      steps=[20, 12, 30, 64], returns=[2.0, 1.5, 1.5, 0.5])
    c = paired_comparison(plan, base)
    assert (c["success_only_agent"], c["success_only_baseline"]) == (2, 0)
    assert c["mcnemar_p"] == pytest.approx(0.5)  # 2 of 2 discordant pairs: 2 * 0.5**2
    assert c["return_diff"] == pytest.approx(1.125) and c["return_diff_stderr"] == pytest.approx(0.5154, abs=1e-4)
    assert 0 < c["wilcoxon_p"] < 1
    [line] = paired_lines([base, plan])
    assert line.startswith("planner vs random, same 4 seeds: successes only planner 2, only random 0")
    assert paired_lines([plan]) == []  # no baseline among the rows: nothing to compare with
    with pytest.raises(ValueError, match="same seeds"):
        paired_comparison(plan, EvalResult(agent="random", task="navigate", seeds=[5, 6, 7, 8],
                                           success=[False] * 4, steps=[64] * 4, returns=[0.0] * 4))


def test_evaluate_cli_prints_the_table(tmp_path, capsys):
    needs_sim("navigate")
    assert evaluate_main(["--agent", "random", "--episodes", "1", "--max-steps", "3", "--no-progress",
                          "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| random | 0% (0/1) |" in out and "--agent random --task navigate --episodes 1" in out
    assert (tmp_path / "results.json").is_file() and (tmp_path / "table.md").is_file()
    assert (tmp_path / "success.png").stat().st_size > 1000
    [row] = load_results(tmp_path)  # what the README's chart script reads back
    assert row.agent == "random" and row.episodes == 1 and row.steps == [3]
    # a comma list of agents: a row each, and each compared with random on the same seeds
    assert evaluate_main(["--agent", "random,scripted", "--episodes", "1", "--max-steps", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| scripted |" in out and "scripted vs random, same 1 seeds:" in out
    with pytest.raises(SystemExit):
        evaluate_main(["--agent", "random,lpips"])
    assert "'random,lpips': give one of random, scripted, planner, ppo, vlm" in capsys.readouterr().err


# ---- examples as smoke tests -------------------------------------------------------------------
def _example(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_to_goal_example_writes_a_gif(tiny_ckpt, tmp_path):
    needs_sim("navigate")
    from PIL import Image

    out = tmp_path / "plan.gif"
    assert _example("plan_to_goal").main(["--checkpoint", str(tiny_ckpt), "--steps", "2", "--candidates", "4",
                                          "--horizon", "1", "--iterations", "1", "--elites", "2",
                                          "--out", str(out), "--scale", "1"]) == 0
    gif = Image.open(out)
    assert gif.n_frames == 3 and gif.size == (3 * 64 + 4, 64 + 28)  # start + 2 steps; imagined | real | goal


def test_train_ppo_example_saves_a_policy(tiny_ckpt, tmp_path):
    needs_sb3()
    out = tmp_path / "ppo"
    assert _example("train_ppo").main(["--checkpoint", str(tiny_ckpt), "--timesteps", "64", "--num-envs", "2",
                                       "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
                                       "--max-episode-steps", "8", "--save-every", "0", "--out", str(out),
                                       "--env-kwargs", '{"progress_weight": 0}']) == 0
    assert (out / "policy.zip").is_file()
    assert json.loads((out / "args.json").read_text())["env_kwargs"] == {"progress_weight": 0}


def test_ppo_env_kwargs_reach_the_imagined_envs_and_fixed_keys_are_refused():
    needs_sb3()
    from bagel_world.agents.ppo import PPOArgs, make_imagined_vecenv

    venv = make_imagined_vecenv(PPOArgs(num_envs=2, env_kwargs={"progress_weight": 0.0, "success_bonus": 2.0}), fake())
    assert venv.get_attr("progress_weight") == [0.0, 0.0] and venv.get_attr("success_bonus") == [2.0, 2.0]
    venv.close()
    with pytest.raises(ValueError, match=r"env_kwargs may not set \['scenarios'\]"):
        make_imagined_vecenv(PPOArgs(env_kwargs={"scenarios": "x.npz"}), fake())
    with pytest.raises(ValueError, match=r"env_kwargs must be a dict of env keywords, got \[0\]"):
        make_imagined_vecenv(PPOArgs(env_kwargs=[0]), fake())  # type: ignore[arg-type]


def test_probe_examples_print_their_tables(tiny_ckpt, capsys):
    needs_sim("navigate")
    assert _example("probe_vlm_policy").main(["--checkpoint", str(tiny_ckpt), "--episodes", "1",
                                              "--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "| Is the red box visible? |" in out and "agreement with the scripted action" in out
    assert _example("probe_planner_score").main(["--checkpoint", str(tiny_ckpt), "--episodes", "2",
                                                 "--max-steps", "4", "--horizon", "1"]) == 0
    out = capsys.readouterr().out
    assert "| the real frame |" in out and "| the frame imagined 1 step ahead |" in out


def test_probe_action_choice_tries_every_action_from_the_same_real_state(tiny_ckpt, tmp_path, capsys):
    needs_sim("navigate")
    out_json = tmp_path / "probe.json"
    assert _example("probe_action_choice").main(["--checkpoint", str(tiny_ckpt), "--layout", "one_room", "--landmarks",
                                                 "--episodes", "1", "--max-steps", "3", "--explore", "0",
                                                 "--threads", "1", "--out", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| real change of distance after its pick (m) |" in out and "average action (random)" in out
    d = json.loads(out_json.read_text())
    states = d["per_state"]
    assert d["imagined"]["states"] == len(states) == 3 and d["env_kwargs"] == {"layout": "one_room", "landmarks": True}
    for s in states:
        assert len(s["after"]) == len(s["scores"]) == len(s["real_scores"]) == 6
        assert s["scores"][s["chosen"]] == max(s["scores"]) and s["real_scores"][s["chosen_on_real"]] == max(s["real_scores"])
    # with no exploration the walk takes the planner's action, and the real state was restored
    # after trying the others: that action's outcome is exactly where the next state starts
    for s, nxt in zip(states, states[1:]):
        assert s["after"][s["chosen"]] == nxt["before"]
    deltas = np.array([np.array(s["after"]) - s["before"] for s in states])
    assert d["imagined"]["delta_average"] == pytest.approx(deltas.mean())
    assert d["imagined"]["delta_chosen"] == pytest.approx(np.mean([deltas[i, s["chosen"]] for i, s in enumerate(states)]))


def test_probe_oracle_planner_picks_the_true_best_action_without_noise(tmp_path, capsys):
    needs_sim("navigate")
    out_json = tmp_path / "oracle.json"
    probe = _example("probe_oracle_planner")
    assert probe.main(["--layout", "one_room", "--landmarks", "--episodes", "2", "--max-steps", "6",
                       "--noise", "0,1000", "--reached-weight", "0", "--out", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| noise (m) | success |" in out and "| 0 |" in out and "| 1000 |" in out
    exact, noisy = json.loads(out_json.read_text())["rows"]
    assert exact["states"] > 0 and exact["chosen_is_best"] == 1.0 and exact["chosen_minus_average"] < 0
    # noise that swamps the scores picks like a random agent: no better than chance by much
    assert noisy["chosen_is_best"] < 0.8 and noisy["chosen_minus_average"] > exact["chosen_minus_average"]
    with pytest.raises(SystemExit):
        probe.main(["--noise", "-1"])


def test_every_action_outcome_restores_the_state_and_pick_figures_scores_picks():
    needs_sim("navigate")
    from bagel_world.evaluate_agents import every_action_outcome, make_real_env, pick_figures

    env = make_real_env("navigate", max_steps=8, layout="one_room")
    obs, info = env.reset(seed=3)
    infos: list[dict] = []
    after, frames = every_action_outcome(env, "goal_distance", infos)
    assert len(after) == len(frames) == len(infos) == env.action_space.n
    assert [i["goal_distance"] for i in infos] == after and all("is_success" in i for i in infos)
    # the env is where it was: same distance and frame, and each action from here gives its outcome again
    assert env.unwrapped.get_state().episode["frame_index"] == 0
    for i in (0, 2):
        state = env.unwrapped.get_state()
        o, _, _, _, inf = env.step(i)
        assert inf["goal_distance"] == after[i] and np.array_equal(o["frame"], frames[i])
        env.unwrapped.set_state(state)
    env.close()

    before = np.array([2.0, 1.0])
    after2 = np.array([[1.5, 2.5, 2.0], [1.0, 0.5, 1.5]])  # changes: [-.5, +.5, 0], [0, -.5, +.5]
    good = pick_figures(before, after2, [0, 1], [[3, 1, 2], [2, 3, 1]])  # the best action, scores in true order
    assert good["delta_chosen"] == -0.5 and good["delta_average"] == 0.0 and good["delta_best"] == -0.5
    assert good["chosen_minus_average"] == -0.5 and good["chosen_is_best"] == 1.0
    assert good["chance_is_best"] == pytest.approx(1 / 3)
    assert good["within_state_spearman"] == pytest.approx(1.0) and good["states"] == 2
    bad = pick_figures(before, after2, [1, 2], [[1, 3, 2], [2, 1, 3]])  # the worst action, scores reversed
    assert bad["chosen_minus_average"] == 0.5 and bad["chosen_is_best"] == 0.0
    assert bad["within_state_spearman"] == pytest.approx(-1.0)


def test_probe_judge_on_recordings_example(tiny_ckpt, tmp_path, capsys):
    needs_sim("navigate")
    from bagel_world.training.recorder import record

    [shard] = record("navigate", tmp_path, episodes=2, steps=4, seed=1000, progress=False,
                     env_kwargs={"layout": "one_room"})
    assert _example("probe_judge_on_recordings").main(["--checkpoint", str(tiny_ckpt), "--shard", str(shard),
                                                       "--episodes", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("own       goals: 6 frames, Spearman") and out[1].startswith("hindsight goals: 6 frames")


def test_probe_judge_ceiling_example(capsys):
    needs_sim("navigate")
    probe = _example("probe_judge_ceiling")
    # Its estimator: k-nearest-neighbour regression on standardised features.
    x = np.linspace(0, 10, 200)[:, None] * np.array([[1.0, 100.0]])
    y = x[:, 0] ** 2
    pred = probe.knn_predict(x[::2], y[::2], x[1::2], k=1)
    assert np.abs(pred - y[1::2]).max() < 1.2
    # With history: each row, then the rows before it (the first one repeated).
    h = probe.with_history(np.arange(6.0).reshape(3, 2), 2)
    assert h.tolist() == [[0, 1, 0, 1, 0, 1], [2, 3, 0, 1, 0, 1], [4, 5, 2, 3, 0, 1]]
    with pytest.raises(SystemExit, match="--folds"):
        probe.main(["--episodes", "1"])
    assert probe.main(["--layout", "one_room", "--episodes", "4", "--folds", "2", "--steps", "6", "--k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("navigate one_room, success=pose: ") and "box not visible in" in out[0]
    assert out[1].startswith("single-frame estimate (kNN on what the frame shows, fitted on other seeds): Spearman")
    assert probe.main(["--episodes", "4", "--folds", "2", "--steps", "6", "--k", "3", "--history", "2"]) == 0
    assert "estimate (kNN on what the frame and the 2 before it show" in capsys.readouterr().out
    # Under the view rule the distance is the env's view_distance, and the goal's box distance a feature.
    x, dist = probe.walk_features("one_room", 0, 6, 0.3, "view")
    assert x.shape[1] == len(probe.FEATURES) + 1 and np.all(x[:, -1] >= 2.0) and np.all(x[:, -1] <= 3.0)
    assert probe.main(["--layout", "one_room", "--episodes", "4", "--folds", "2", "--steps", "6", "--k", "3",
                       "--success", "view"]) == 0
    assert capsys.readouterr().out.startswith("navigate one_room, success=view: ")


def test_probe_goal_identifiable_example(capsys):
    needs_sim("navigate")
    probe = _example("probe_goal_identifiable")
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[::2, ::2] = 255  # a fine checker: far in raw pixels, near after 2x2 pooling
    assert probe._rmse(a, b) > 100 and probe._rmse(a, b, 2) == pytest.approx(63.75)
    assert probe.main(["--layout", "one_room", "--episodes", "2", "--seed", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("one_room, seeds 0-1: goal pose 2-3 m from the box, success within 0.5 m")
    assert out[1].startswith("confusable goals, raw pixels") and out[2].startswith("confusable goals, 8x8 mean-pooled")
    assert out[3].startswith("agent that matches the box perfectly and ignores the background: success")
    assert probe.main(["--layout", "one_room", "--episodes", "1", "--seed", "0", "--landmarks"]) == 0
    assert capsys.readouterr().out.startswith("one_room with landmarks, seeds 0-0: goal pose")


def test_evaluate_agent_success_rule(capsys):
    needs_sim("navigate")
    from bagel_world.cli import main as cli_main

    assert cli_main(["evaluate-agent", "--agent", "scripted", "--task", "navigate", "--layout", "one_room",
                     "--success", "view", "--episodes", "1", "--seed", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| scripted | 100% (1/1) |" in out
    assert "--layout one_room --success view" in out  # the row's command reproduces the rule
    assert cli_main(["evaluate-agent", "--agent", "random", "--task", "navigate", "--success", "near",
                     "--episodes", "1"]) == 2
    assert "unknown success rule 'near'; accepted: ['pose', 'view']" in capsys.readouterr().err
    assert cli_main(["evaluate-agent", "--agent", "random", "--task", "manipulate", "--success", "view",
                     "--episodes", "1"]) == 2
    assert "--success applies to the navigate task only, not 'manipulate'" in capsys.readouterr().err


def test_evaluate_agent_and_record_take_the_landmarks(capsys, tmp_path):
    needs_sim("navigate")
    import json

    from bagel_world.cli import main as cli_main

    assert cli_main(["evaluate-agent", "--agent", "scripted", "--task", "navigate", "--layout", "one_room",
                     "--landmarks", "--episodes", "1", "--seed", "0", "--no-progress"]) == 0
    assert "--layout one_room --landmarks" in capsys.readouterr().out  # the row's command keeps them
    assert cli_main(["evaluate-agent", "--agent", "random", "--task", "navigate", "--landmarks", "--episodes", "1"]) == 2
    assert "--landmarks is defined for layouts ['one_room'], not 'four_rooms'" in capsys.readouterr().err
    assert cli_main(["scenarios", "--task", "manipulate", "--landmarks", "--episodes", "1"]) == 2
    assert "--landmarks applies to the navigate task only, not 'manipulate'" in capsys.readouterr().err
    assert cli_main(["record", "--task", "navigate", "--layout", "one_room", "--landmarks", "--out", str(tmp_path),
                     "--episodes", "1", "--steps", "2"]) == 0
    assert json.loads((tmp_path / "navigate" / "env.json").read_text()) == {"landmarks": True, "layout": "one_room"}


def test_probe_judge_learnability_example(tmp_path, capsys):
    needs_sim("navigate")
    from bagel_world.simulator.progress import DISTANCE_BINS
    from bagel_world.training.recorder import record

    record("navigate", tmp_path / "rec", episodes=3, steps=6, seed=1000, env_kwargs={"layout": "one_room"})
    probe = _example("probe_judge_learnability")
    # The questions are the judge's own: a frame, a goal image and a distance bin.
    frames, goals, labels = probe.training_questions(str(tmp_path / "rec"), 40, 0, "pose")
    assert frames.shape == goals.shape == (40, 64, 64, 3) and frames.dtype == np.uint8
    assert labels.min() >= 0 and labels.max() < len(DISTANCE_BINS["navigate"].centres)
    assert probe.stack(frames[:2], goals[:2]).shape == (2, 6, 64, 64)
    assert probe.main(["--data", str(tmp_path / "rec"), "--questions", "64", "--steps", "3", "--batch-size", "16",
                       "--episodes", "1", "--seed", "200"]) == 0
    out = capsys.readouterr().out
    assert "| cross-entropy, last 100 steps / the bin prior's |" in out and "| Spearman on " in out


def test_probe_action_value_learnability_example(tmp_path, capsys):
    needs_sim("navigate")
    from bagel_world.sims import pose_progress
    from bagel_world.training.data import Shard
    from bagel_world.training.pipeline import load_training_shards
    from bagel_world.training.recorder import record

    [shard] = record("navigate", tmp_path / "rec", episodes=3, steps=6, seed=1000, progress=False,
                     env_kwargs={"layout": "one_room"})
    probe = _example("probe_action_value_learnability")
    actions = tuple(default_templates(large=False)["navigate"].canonical_actions)
    # The targets are the recorded poses' change of distance to the goal, per canonical step taken.
    (frames, goals, acts, deltas), _ = probe.recorded_steps(str(tmp_path / "rec"), actions)
    [s] = load_training_shards(tmp_path / "rec", holdout=8)[0]  # the episodes the probe trains on
    assert s.frames.shape[0] < Shard.load(shard).frames.shape[0]
    canonical = [(e, t) for e in range(s.frames.shape[0]) for t in range(s.actions.shape[1])
                 if str(s.actions[e, t]) in actions]
    assert len(deltas) == len(canonical) > 0 and frames.shape == goals.shape == (len(deltas), 64, 64, 3)
    e, t = canonical[0]
    dist = [pose_progress("navigate", s.poses[e, k], s.goal_poses[e], "pose", True)[0] for k in (t, t + 1)]
    assert deltas[0] == pytest.approx(dist[1] - dist[0]) and actions[acts[0]] == str(s.actions[e, t])
    assert probe.main(["--data", str(tmp_path / "rec"), "--steps", "3", "--batch-size", "8", "--episodes", "1",
                       "--max-steps", "2", "--out", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    assert "| pick - average, per state (m) |" in out
    f = json.loads((tmp_path / "f.json").read_text())
    assert f["states"] == 2 and f["training_steps"] == len(deltas)
