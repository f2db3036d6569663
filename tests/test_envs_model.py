"""The envs on the real default model (the tiny checkpoint when none ships): small and few steps."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence

from bagel_world.envs import ENV_IDS, shared_simulator


@pytest.fixture(scope="module")
def sim():
    return shared_simulator()  # = make_simulator(), the process-wide default simulator


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_on_the_model(sim, env_id):
    # The defaults leave the wall-clock step_latency_s out of info (report_latency=False):
    # check_env compares the infos of two seeded steps exactly.
    env = gym.make(env_id, render_mode="rgb_array")
    assert env.unwrapped.simulator is sim
    check_env(env.unwrapped)
    env.close()


def test_module_prefixed_make_loads_the_default_model():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('bagel_world:BagelNavigate-v0', action_mode='discrete', report_latency=True)\n"
        "obs, info = env.reset(seed=0)\n"
        "obs, r, term, trunc, info = env.step(0)\n"
        "assert obs['frame'].dtype.name == 'uint8' and info['step_latency_s'] > 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_seeded_rollout_repeats_exactly(sim):
    def run():
        env = gym.make("BagelNavigate-v0", action_mode="discrete", report_latency=True)
        out = [env.reset(seed=11)[0]]
        for a in (0, 2):
            obs, r, term, trunc, info = env.step(a)
            assert info["step_latency_s"] > 0 and info["frame_index"] == len(out)
            info.pop("step_latency_s")
            out.append((obs, r, term, trunc, info))
        env.close()
        return out

    assert data_equivalence(run(), run(), exact=True)


def test_vector_env_matches_separate_envs_in_one_batch(sim, monkeypatch):
    calls = []
    real_step = sim.step
    monkeypatch.setattr(sim, "step", lambda sids, acts, seeds: calls.append(len(sids)) or real_step(sids, acts, seeds))
    n = 2
    # A threshold of 1.0 keeps the episodes running (P(yes) < 1), so no step is an autoreset.
    vec = gym.make_vec("BagelFutureFrame-v0", num_envs=n, action_mode="discrete", success_threshold=1.0)
    singles = [gym.make("BagelFutureFrame-v0", action_mode="discrete", success_threshold=1.0) for _ in range(n)]
    obs, _ = vec.reset(seed=3)
    ref = [e.reset(seed=3 + i)[0] for i, e in enumerate(singles)]
    assert all(np.array_equal(obs[i], ref[i]) for i in range(n))
    for actions in ([0, 3], [2, 5]):
        calls.clear()
        obs, rew, term, trunc, info = vec.step(np.array(actions))
        assert calls == [n], "the vector env must make one batched simulator call"
        ref = [e.step(a) for e, a in zip(singles, actions)]
        for i in range(n):
            # Same seeds and actions: the same frames, up to float rounding that depends on
            # the batch composition (+-1 uint8 level on CPU).
            diff = np.abs(obs[i].astype(int) - ref[i][0].astype(int))
            assert diff.max() <= 2 and diff.mean() < 0.5, (i, diff.max(), diff.mean())
            assert rew[i] == pytest.approx(ref[i][1], abs=1e-2) and 0.0 <= info["p_yes"][i] <= 1.0
    vec.close()


def test_injected_model_simulator_survives_spec_copies(sim):
    env = gym.make("BagelMultiview-v0", simulator=sim, render_mode="rgb_array", report_latency=False)
    assert env.spec is not None
    check_env(env.unwrapped)
    assert env.unwrapped.spec.make().unwrapped.simulator is sim


@pytest.mark.parametrize("slide", [False, True])
def test_sessions_rebuilt_together_past_the_window_match_sessions_alone(sim, slide):
    # Past `window` frames every step rebuilds the context from the kept frames (or, with
    # slide_window, drops the oldest frame from the cache); sessions stepped in one batch
    # must see what each would alone (up to batch float rounding), with the same segments
    # and a context that stops growing.
    from dataclasses import replace

    from bagel_world.simulator.local import LocalSimulator

    tpl = replace(sim.tasks()["navigate"], slide_window=slide)
    sim = LocalSimulator(sim.engine, {"navigate": tpl})
    rng = np.random.default_rng(0)
    starts = [rng.integers(0, 256, (*tpl.resolution, 3), dtype=np.uint8) for _ in range(2)]
    actions = [["move forward 0.5 m", "turn left 30 degrees"], ["strafe right 0.5 m", "move backward 0.5 m"]]
    steps = tpl.window + 2
    together = [sim.open("navigate", [f]) for f in starts]
    alone = [sim.open("navigate", [f]) for f in starts]
    try:
        lengths = []
        for t in range(steps):
            acts = [actions[i][t % 2] for i in range(2)]
            seeds = [100 * t + i for i in range(2)]
            batch = sim.step(together, acts, seeds)
            single = [sim.step([alone[i]], [acts[i]], [seeds[i]])[0] for i in range(2)]
            for b, s in zip(batch, single):
                diff = np.abs(b.frame.astype(int) - s.frame.astype(int))
                assert diff.max() <= 2 and diff.mean() < 0.5, (t, diff.max(), diff.mean())
            a, b = sim._sessions[together[0]], sim._sessions[alone[0]]
            assert a.base.segments == b.base.segments and a.text_only.segments == b.text_only.segments
            assert len(a.frames) == min(t + 2, tpl.window)
            lengths.append(a.base.length)
        full = lengths[tpl.window - 2:]  # from the step that fills the window: only action lengths vary
        assert max(full) - min(full) <= 4, lengths
    finally:
        for sid in together + alone:
            sim.close(sid)


def test_sliding_window_keeps_a_constant_cost_without_rebuilds(sim, monkeypatch):
    # slide_window: past the window the oldest frame and its action leave the cache; the
    # context never re-runs the model over the kept frames (no rebuild) and stops growing.
    from dataclasses import replace

    from bagel_world.simulator.local import LocalSimulator

    tpl = sim.tasks()["navigate"]
    slide = LocalSimulator(sim.engine, {"navigate": replace(tpl, slide_window=True)})
    sid = slide.open("navigate", [np.random.default_rng(0).integers(0, 256, (*tpl.resolution, 3), dtype=np.uint8)])
    rebuilds = []
    real_rebuild = slide._rebuild
    monkeypatch.setattr(slide, "_rebuild", lambda s: rebuilds.append(len(s)) or real_rebuild(s))
    lengths, segments = [], []
    for t in range(tpl.window + 3):
        out = slide.step([sid], ["turn left 30 degrees"], [t])[0]
        s = slide._sessions[sid]
        assert out.frame.shape == (*tpl.resolution, 3) and out.frame_index == t + 1
        assert len(s.frames) == min(t + 2, tpl.window) and len(s.actions) == len(s.frames) - 1
        lengths.append(s.base.length)
        segments.append(list(s.base.segments))
    assert rebuilds == []
    full = tpl.window - 2  # the step that fills the window
    assert len(set(lengths[full:])) == 1 and len({tuple(x) for x in segments[full:]}) == 1, lengths
    # The text-only (image-free) context keeps the same actions as the conditional one.
    assert len(s.text_only.segments) == len(s.head.segments) + len(s.actions)
    slide.close(sid)


def test_score_with_goals_shows_the_goal_before_the_question(sim):
    from bagel_world.simulator.progress import DISTANCE_BINS, DISTANCE_QUESTION

    rng = np.random.default_rng(3)
    start, goal, other = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3))
    sids = [sim.open("navigate", [start]) for _ in range(2)]
    answers = DISTANCE_BINS["navigate"].answers
    try:
        plain = sim.score(sids, DISTANCE_QUESTION, answers)
        a = sim.score(sids, DISTANCE_QUESTION, answers, goals=[goal, other])
        assert a.shape == (2, len(answers)) and np.isfinite(a).all()
        # The goal is in the context: different goals, different answers; the same goal, the same.
        assert not np.allclose(a[0], a[1]) and not np.allclose(a[0], plain[0])
        np.testing.assert_allclose(sim.score(sids[:1], DISTANCE_QUESTION, answers, goals=[goal])[0], a[0], rtol=1e-5)
        with pytest.raises(ValueError, match="one goal frame per session"):
            sim.score(sids, DISTANCE_QUESTION, answers, goals=[goal])
        with pytest.raises(ValueError, match="frame"):
            sim.score(sids[:1], DISTANCE_QUESTION, answers, goals=[goal[:32]])
    finally:
        for s in sids:
            sim.close(s)


@pytest.mark.parametrize("slide_window", [True, False])
def test_open_with_several_start_frames(sim, slide_window):
    # Start frames come without the actions between them: they follow each other with no
    # action text (the text-free layout of training's action dropout), and stepping past
    # the window drops them the way it drops recorded history, sliding or rebuilding.
    from dataclasses import replace

    from bagel_world.simulator.local import LocalSimulator

    tpl = replace(sim.tasks()["navigate"], slide_window=slide_window)
    assert tpl.window >= 3
    local = LocalSimulator(sim.engine, {"navigate": tpl})
    rng = np.random.default_rng(5)
    starts = [rng.integers(0, 256, (*tpl.resolution, 3), dtype=np.uint8) for _ in range(2)]
    one = local.open("navigate", starts[-1:])
    two = local.open("navigate", starts)
    try:
        s, s1 = local._sessions[two], local._sessions[one]
        head = list(s.head.segments)
        assert s.actions == [None] and local.frame(two).tobytes() == starts[-1].tobytes()
        # Two frames, no action text between them; the text-only context has no action yet.
        assert s.base.segments[len(head):] == s1.base.segments[len(head):] * 2
        assert s.text_only.segments == head
        for t in range(tpl.window + 1):
            outs = local.step([two, one], ["turn left 30 degrees"] * 2, [t, t])
            assert outs[0].frame_index == t + 2 and outs[1].frame_index == t + 1
            s = local._sessions[two]
            assert len(s.frames) == min(t + 3, tpl.window)
            known = [a for a in s.actions if a is not None]
            # The kept contexts hold exactly the kept frames and the known actions.
            assert s.base.segments.count(s1.base.segments[-1]) == len(s.frames)
            assert len(s.text_only.segments) == len(head) + len(known)
        assert s.actions == ["turn left 30 degrees"] * (tpl.window - 1)
        # Once the start frames have left the window, the two sessions have the same layout.
        assert local._sessions[two].base.segments == local._sessions[one].base.segments
    finally:
        local.close(one)
        local.close(two)


def test_questions_about_one_state_and_goal_share_the_goal_append(sim, monkeypatch):
    # The judged reward asks two questions of each frame with the same goal: the goal image is
    # appended once per session state and goal, its latents are encoded once per session and
    # goal, and the answers are those of a fresh append.
    from bagel_world.simulator.progress import DISTANCE_BINS, DISTANCE_QUESTION, REACHED_ANSWERS, REACHED_QUESTION

    rng = np.random.default_rng(9)
    start, goal, other = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3))
    answers = DISTANCE_BINS["navigate"].answers
    sids = [sim.open("navigate", [start]) for _ in range(2)]
    appended, encoded = [], []
    real_append, real_encode = sim.engine.append_image, sim.engine.encode_images
    monkeypatch.setattr(sim.engine, "append_image", lambda c, imgs, **k: appended.append(len(imgs)) or real_append(c, imgs, **k))
    monkeypatch.setattr(sim.engine, "encode_images", lambda p, g: encoded.append(len(p)) or real_encode(p, g))
    try:
        d = sim.score(sids, DISTANCE_QUESTION, answers, goals=[goal, other])
        r = sim.score(sids, REACHED_QUESTION, REACHED_ANSWERS, goals=[goal, other])
        assert appended == [2] and encoded == [2]  # both goals once, for both questions
        again = sim.score(sids[:1], DISTANCE_QUESTION, answers, goals=[other])  # another goal: appended
        assert appended == [2, 1] and encoded == [2, 1]
        fresh = sim.open("navigate", [start])
        np.testing.assert_allclose(sim.score([fresh], DISTANCE_QUESTION, answers, goals=[other]), again, rtol=1e-5)
        np.testing.assert_allclose(sim.score([fresh], REACHED_QUESTION, REACHED_ANSWERS, goals=[goal]), r[:1], rtol=1e-5)
        np.testing.assert_allclose(sim.score([fresh], DISTANCE_QUESTION, answers, goals=[goal]), d[:1], rtol=1e-5)
        sids.append(fresh)
        # A step changes the state: the goal is appended again, to the new context, from the
        # latents encoded before it (no encoder pass for a goal the session has seen).
        sim.step(sids[:2], ["turn left 30 degrees"] * 2, [0, 1])
        assert sim._sessions[sids[0]].goal_ctx is None  # the old state's cache is released
        appended.clear()
        encoded.clear()
        moved = sim.score(sids[1:2], DISTANCE_QUESTION, answers, goals=[other])
        assert appended == [1] and encoded == [] and not np.allclose(moved, d[1:2])
        s1 = sim._sessions[sids[1]]
        s1.goal_ctx = s1.goal_latents = None  # encoding the goal afresh gives the same answers
        np.testing.assert_allclose(sim.score(sids[1:2], DISTANCE_QUESTION, answers, goals=[other]), moved, rtol=1e-5)
        assert encoded == [1]
    finally:
        for sid in sids:
            sim.close(sid)


def test_context_latents_sampled_appends_the_sampler_latents_without_an_encoder_pass(sim, monkeypatch):
    # "reencode" (the default without world.json, the official order) encodes the decoded
    # frame again; "sampled" (the shipped model's world.json) puts the sampler's own final
    # latents into the context and never calls the encoder while stepping. Both give the
    # same first frame from the same start and seed.
    from dataclasses import replace

    from bagel_world.simulator.base import TaskTemplate
    from bagel_world.simulator.local import LocalSimulator
    from bagel_world.simulator.tasks import default_templates

    tpl = sim.tasks()["navigate"]
    assert {t.context_latents for t in sim.tasks().values()} == {"sampled"}
    assert {t.context_latents for t in default_templates(large=True).values()} == {"reencode"}
    start = np.random.default_rng(7).integers(0, 256, (*tpl.resolution, 3), dtype=np.uint8)
    sims = {k: LocalSimulator(sim.engine, {"navigate": replace(tpl, context_latents=k)}) for k in ("reencode", "sampled")}
    sids = {k: s.open("navigate", [start]) for k, s in sims.items()}
    encoded, generated = [], []
    real_encode, real_generate = sim.engine.encode_images, sim.engine.generate_image
    monkeypatch.setattr(sim.engine, "encode_images", lambda *a, **k: encoded.append(1) or real_encode(*a, **k))
    monkeypatch.setattr(sim.engine, "generate_image",
                        lambda *a, **k: generated.append(real_generate(*a, **k)) or generated[-1])
    out = {}
    for k in ("reencode", "sampled"):
        encoded.clear()
        out[k] = sims[k].step([sids[k]], ["turn left 30 degrees"], [11])[0].frame
        assert len(encoded) == (1 if k == "reencode" else 0)
        kept = sims[k]._sessions[sids[k]].frames[-1].latents
        same = torch.equal(kept, generated[-1].latents[0].to(kept))
        assert same == (k == "sampled")
    np.testing.assert_array_equal(out["reencode"], out["sampled"])
    # The next step runs on the new context either way.
    for k in ("reencode", "sampled"):
        assert sims[k].step([sids[k]], ["move forward 0.5 m"], [12])[0].frame.shape == (*tpl.resolution, 3)
        sims[k].close(sids[k])
    with pytest.raises(ValueError, match=r"context_latents must be one of \('reencode', 'sampled'\), got 'raw'"):
        TaskTemplate(name="navigate", system_prompt="x", context_latents="raw")
