"""Env logic on the model-free FakeSimulator: API conformance, seeding, batching, bad input."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from fakes import FakeSimulator, LocatingMixin
from gymnasium.utils.env_checker import check_env
from PIL import Image

import bagel_world
from bagel_world.envs import ENV_IDS, ActionText
from bagel_world.simulator.tasks import default_templates

H = W = 64  # the small templates' resolution
GOAL_IDS = ("BagelNavigate-v0", "BagelManipulate-v0")


def fake() -> FakeSimulator:
    return FakeSimulator(default_templates(large=False))


def make(env_id: str, sim: FakeSimulator | None = None, **kwargs) -> gym.Env:
    return gym.make(env_id, simulator=sim if sim is not None else fake(), **kwargs)


def frame_of(obs):
    return obs["frame"] if isinstance(obs, dict) else obs


def rollout(env: gym.Env, seed: int, actions) -> list:
    out = [env.reset(seed=seed)]
    out += [env.step(a) for a in actions]
    return out


# ---- registration --------------------------------------------------------------------------
def test_ids_registered_with_vector_entry_points():
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point.startswith("bagel_world.envs.")
        assert spec.vector_entry_point.startswith("bagel_world.envs.vector:")
        assert spec.max_episode_steps and spec.max_episode_steps > 0


def test_module_prefixed_id_works_without_prior_import_and_import_is_light():
    # "bagel_world:" makes gym.make import bagel_world, which registers the ids; the env's
    # own TypeError (not gymnasium's NameNotFound) shows the id resolved.
    code = (
        "import sys, gymnasium as gym\n"
        "try:\n"
        "    gym.make('bagel_world:BagelNavigate-v0', simulator=object())\n"
        "except TypeError as e:\n"
        "    assert 'Simulator' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('the env accepted a non-Simulator')\n"
        "assert 'torch' not in sys.modules, 'registering the envs imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = "import sys, bagel_world, gymnasium as gym; gym.spec('BagelMultiview-v0'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- Gymnasium conformance -----------------------------------------------------------------
@pytest.mark.parametrize("action_mode", ["text", "discrete"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id, action_mode):
    env = make(env_id, action_mode=action_mode, render_mode="rgb_array")
    check_env(env.unwrapped)
    env.close()


def test_spaces():
    nav = make("BagelNavigate-v0").unwrapped
    assert nav.observation_space["frame"] == gym.spaces.Box(0, 255, (H, W, 3), np.uint8)
    assert set(nav.observation_space.spaces) == {"frame", "goal"}
    assert isinstance(make("BagelMultiview-v0").observation_space, gym.spaces.Box)
    assert isinstance(make("BagelFutureFrame-v0").observation_space, gym.spaces.Box)
    assert make("BagelManipulate-v0", action_mode="discrete").action_space == gym.spaces.Discrete(8)
    text = nav.action_space
    assert isinstance(text, ActionText) and isinstance(text, gym.spaces.Text) and text.max_length == 128
    assert "turn left 30 degrees" in text and " " in text.character_set
    assert "   " not in text and "" not in text and "a\tb" not in text
    text.seed(0)
    assert all(text.contains(text.sample()) for _ in range(200))
    assert make("BagelNavigate-v0", max_action_length=16).action_space.max_length == 16


# ---- determinism -----------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_rollouts_repeat_exactly(env_id):
    actions = ["move forward 0.5 m", "turn left 30 degrees", "wait", "zoom in"]
    a = rollout(make(env_id), 7, actions)
    b = rollout(make(env_id), 7, actions)
    assert gym.utils.env_checker.data_equivalence(a, b, exact=True)
    c = rollout(make(env_id), 8, actions)
    assert not gym.utils.env_checker.data_equivalence(a[1:], c[1:], exact=True)


def test_reset_without_seed_continues_the_generator():
    env = make("BagelNavigate-v0")
    env.reset(seed=3)
    first = [env.reset()[0]["frame"] for _ in range(3)]
    env.reset(seed=3)
    again = [env.reset()[0]["frame"] for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


# ---- vector env ------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["BagelNavigate-v0", "BagelFutureFrame-v0"])
def test_vector_env_equals_separate_envs_and_batches_steps(env_id):
    n, steps, limit = 3, 5, 2  # limit forces two NEXT_STEP autoresets within the run
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", simulator=fake(),
                       action_mode="discrete", max_episode_steps=limit)
    sim = vec.unwrapped.simulator
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert vec.observation_space == gym.vector.utils.batch_space(vec.single_observation_space, n)
    singles = [make(env_id, action_mode="discrete", max_episode_steps=limit) for _ in range(n)]

    obs, _ = vec.reset(seed=10)
    ref = [e.reset(seed=10 + i)[0] for i, e in enumerate(singles)]
    for i in range(n):
        assert np.array_equal(frame_of(obs)[i], frame_of(ref[i])), i
    done = [False] * n
    rng = np.random.default_rng(0)
    for t in range(steps):
        calls = sim.step_calls
        actions = rng.integers(0, vec.single_action_space.n, n)
        obs, rew, term, trunc, info = vec.step(actions)
        for i, e in enumerate(singles):
            if done[i]:  # NEXT_STEP: this step resets the sub-env
                o, r, te, tr = e.reset()[0], 0.0, False, False
            else:
                o, r, te, tr, _ = e.step(int(actions[i]))
            assert np.array_equal(frame_of(obs)[i], frame_of(o)), (t, i)
            assert rew[i] == r and term[i] == te and trunc[i] == tr, (t, i)
            done[i] = te or tr
        stepped = not all(info.get("_scene_index", np.zeros(n, bool)))
        assert sim.step_calls - calls == (1 if stepped else 0), "one batched simulator call per vector step"
    vec.close()


def test_vector_env_seed_list_reset_mask_and_render():
    vec = gym.make_vec("BagelMultiview-v0", num_envs=2, simulator=fake(), render_mode="rgb_array")
    obs, info = vec.reset(seed=[4, 9])
    single = make("BagelMultiview-v0")
    assert np.array_equal(obs[1], single.reset(seed=9)[0])
    obs2, info2 = vec.reset(options={"reset_mask": np.array([True, False])})
    assert np.array_equal(obs2[1], obs[1]) and info2["_scene_index"].tolist() == [True, False]
    frames = vec.render()
    assert len(frames) == 2 and np.array_equal(frames[1], obs2[1])
    vec.step(["orbit left 30 degrees", "zoom in"])
    vec.close()


def test_vector_env_bad_action_names_the_sub_env_and_changes_nothing():
    vec = gym.make_vec("BagelNavigate-v0", num_envs=2, simulator=fake())
    vec.reset(seed=0)
    sim = vec.unwrapped.simulator
    with pytest.raises(ValueError, match="sub-env 1"):
        vec.step(["move forward 0.5 m", ""])
    with pytest.raises(ValueError, match="2 sub-envs"):
        vec.step(["move forward 0.5 m"])
    assert sim.step_calls == 0
    vec.step(["move forward 0.5 m", "turn left 30 degrees"])
    assert sim.step_calls == 1


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "action, message",
    [
        ("", "empty or blank"),
        ("   ", "empty or blank"),
        ("x" * 129, "at most max_action_length=128"),
        ("turn\tleft", "non-printable"),
        ("go \u00e9ast", "non-printable"),
        (3, "must be a str"),
    ],
)
def test_bad_text_actions_raise_and_env_stays_usable(action, message):
    env = make("BagelNavigate-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    obs, *_ = env.step("move forward 0.5 m")
    assert obs in env.observation_space


@pytest.mark.parametrize("action", [6, -1, 2.0, True, "0", np.array([1, 2])])
def test_bad_discrete_actions_raise_and_env_stays_usable(action):
    env = make("BagelNavigate-v0", action_mode="discrete")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"0\.\.5|int in \[0, 6\)"):
        env.step(action)
    env.step(np.int64(5))
    env.step(np.array(0))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((32, 32, 3), np.uint8), r"shape \(32, 32, 3\).*\(64, 64, 3\)"),
        (np.zeros((64, 64, 3), np.float32), "dtype float32"),
        (np.zeros((64, 64), np.uint8), r"shape \(64, 64\)"),
        (Image.new("L", (64, 64)), "mode 'L'"),
        ([[0, 0, 0]], "list"),
    ],
)
def test_bad_start_images_raise_and_env_stays_usable(image, message):
    env = make("BagelMultiview-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.reset(options={"start_image": image})
    env.step("zoom in")  # the previous episode goes on


def test_bad_options_raise():
    env = make("BagelNavigate-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['start_frame'\].*accepted keys"):
        env.reset(options={"start_frame": np.zeros((H, W, 3), np.uint8)})
    with pytest.raises(ValueError, match="needs options\\['goal_image'\\]"):
        env.reset(options={"start_image": np.zeros((H, W, 3), np.uint8)})
    with pytest.raises(ValueError, match="scene_index"):
        env.reset(options={"scene_index": 10_000})
    with pytest.raises(ValueError, match="unknown reset option"):
        make("BagelMultiview-v0").reset(options={"goal_image": np.zeros((H, W, 3), np.uint8)})
    env.step("move forward 0.5 m")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="action_mode"):
        make("BagelNavigate-v0", action_mode="continuous")
    with pytest.raises(ValueError, match="render_mode"):
        bagel_world.envs.BagelNavigateEnv(simulator=fake(), render_mode="human_ish")
    with pytest.raises(ValueError, match="not both"):
        make("BagelNavigate-v0", checkpoint="/nowhere")


def test_step_before_reset():
    with pytest.raises(gym.error.ResetNeeded):
        make("BagelNavigate-v0", disable_env_checker=True).unwrapped.step("go")


# ---- user scenes and rewards -----------------------------------------------------------------
def test_user_start_goal_and_instruction():
    sim = fake()
    env = make("BagelNavigate-v0", sim, reward="feature")
    rng = np.random.default_rng(0)
    start = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    obs, info = env.reset(options={"start_image": Image.fromarray(start), "goal_image": start,
                                   "instruction": "find the red box"})
    assert np.array_equal(obs["frame"], start) and np.array_equal(obs["goal"], start)
    assert info["scene_index"] == -1 and info["goal_similarity"] == pytest.approx(1.0, abs=1e-5)
    (session,) = sim._sessions.values()
    assert session["prompt"] == "find the red box"
    env.close()
    env.close()  # idempotent
    assert not sim._sessions


def test_custom_scenarios_set_starts_and_goals_but_not_the_reward_centre(tmp_path):
    from bagel_world.simulator.scenarios import ScenarioSet

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    goals = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    ScenarioSet(frames, goals).save(tmp_path / "nav.npz")
    sim = fake()
    default = make("BagelNavigate-v0", sim)
    for scenarios in (ScenarioSet(frames, goals), tmp_path / "nav.npz", str(tmp_path / "nav.npz")):
        env = make("BagelNavigate-v0", sim, scenarios=scenarios)
        obs, info = env.reset(seed=0)
        i = info["scene_index"]
        assert 0 <= i < 3 and np.array_equal(obs["frame"], frames[i]) and np.array_equal(obs["goal"], goals[i])
        obs, info = env.reset(options={"scene_index": 2})
        assert np.array_equal(obs["goal"], goals[2])
        # Rewards stay centred on the model's own scenario set: same meaning with any start set.
        assert np.array_equal(env.unwrapped._features(frames), default.unwrapped._features(frames))
        with pytest.raises(ValueError, match=r"scene_index.*\[0, 3\)"):
            env.reset(options={"scene_index": 3})
    vec = gym.make_vec("BagelNavigate-v0", num_envs=2, vectorization_mode="vector_entry_point", simulator=sim,
                       scenarios=tmp_path / "nav.npz")
    obs, _ = vec.reset(seed=0)
    assert all(any(np.array_equal(f, g) for g in frames) for f in obs["frame"])
    vec.close()


def test_bad_custom_scenarios_raise(tmp_path):
    from bagel_world.simulator.scenarios import ScenarioSet

    small = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\).*\(64, 64, 3\)"):
        make("BagelNavigate-v0", scenarios=ScenarioSet(small, small))
    with pytest.raises(ValueError, match="no goal images"):
        make("BagelNavigate-v0", scenarios=ScenarioSet(np.zeros((2, H, W, 3), np.uint8)))
    with pytest.raises(ValueError, match="1 goals for 2 frames"):
        make("BagelNavigate-v0", scenarios=ScenarioSet(np.zeros((2, H, W, 3), np.uint8),
                                                       np.zeros((1, H, W, 3), np.uint8)))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        make("BagelNavigate-v0", scenarios=tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="ScenarioSet or the path"):
        make("BagelNavigate-v0", scenarios=[1, 2])


def test_navigation_success_terminates_with_bonus():
    env = make("BagelNavigate-v0", reward="feature", success_threshold=-0.99, success_bonus=5.0)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("move forward 0.5 m")
    assert terminated and info["is_success"] and reward == pytest.approx(info["goal_similarity"] + 5.0)
    env = make("BagelNavigate-v0", reward="feature", success_threshold=1.0)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("move forward 0.5 m")
    assert not terminated and reward == info["goal_similarity"] and -1 <= reward <= 1


def test_judged_reward_is_the_decrease_of_judged_distance_plus_bonus():
    from bagel_world.simulator.progress import DISTANCE_BINS, DISTANCE_QUESTION, REACHED_QUESTION

    sim = fake()
    env = make("BagelNavigate-v0", sim, success_bonus=3.0).unwrapped  # judged: navigate's default
    assert env.reward_kind == "judged"
    bins = DISTANCE_BINS["navigate"]
    rng = np.random.default_rng(0)
    goal = np.full((H, W, 3), 128, np.uint8)
    start = np.clip(goal.astype(int) + rng.integers(-120, 121, (H, W, 3)), 0, 255).astype(np.uint8)

    def judged(frame):  # what the fake judge answers, as the env must read it
        logp = sim.score([sim.open("navigate", [frame])], DISTANCE_QUESTION, bins.answers, goals=[goal])
        return float(bins.expected(np.asarray(logp, np.float64))[0])

    _, info = env.reset(options={"start_image": start, "goal_image": goal})
    d0 = judged(start)
    assert info["judged_distance"] == pytest.approx(d0) and d0 > 1.0
    assert sim.score_calls[-1] == (DISTANCE_QUESTION, bins.answers, True)
    obs, reward, terminated, _, info = env.step("move forward 0.5 m")
    d1 = judged(obs["frame"])
    assert info["judged_distance"] == pytest.approx(d1) and reward == pytest.approx(d0 - d1)
    assert not terminated and not info["is_success"] and info["judged_reached"] < 0.5
    assert {q for q, _, with_goal in sim.score_calls if with_goal} == {DISTANCE_QUESTION, REACHED_QUESTION}
    # At the goal: judged distance near 0, reached, the bonus, and the episode ends.
    env.reset(options={"start_image": goal, "goal_image": goal})
    obs, reward, terminated, _, info = env.step("move forward 0.5 m")  # the fake moves a few grey levels
    assert terminated and info["is_success"] and info["judged_reached"] > 0.5
    assert reward == pytest.approx(judged(goal) - judged(obs["frame"]) + 3.0)
    # The feature reward stays available; judged needs a task with a judge.
    assert "goal_similarity" in make("BagelNavigate-v0", reward="feature").reset(seed=0)[1]
    assert make("BagelManipulate-v0").unwrapped.reward_kind == "feature"
    with pytest.raises(ValueError, match="tasks with one: \\['navigate'\\]"):
        make("BagelManipulate-v0", reward="judged")
    with pytest.raises(ValueError, match="reward must be one of"):
        make("BagelNavigate-v0", reward="distance")


class LocatingFake(LocatingMixin, FakeSimulator):
    """Frames located at x = 8 m x their mean red level, z = 4 m, heading 90 degrees."""


def test_located_reward_is_the_decrease_of_the_located_distance_plus_bonus():
    from bagel_world.simulator.progress import LOCATE_QUESTIONS, judge_location_frames

    sim = LocatingFake(default_templates(large=False))
    env = make("BagelNavigate-v0", sim, reward="located", success_bonus=3.0, located_radius=0.6).unwrapped
    goal = np.zeros((H, W, 3), np.uint8)
    goal[..., 0] = 160  # located at x = 5.0 m
    start = np.zeros((H, W, 3), np.uint8)
    start[..., 0] = 32  # x = 1.0 m
    _, info = env.reset(options={"start_image": start, "goal_image": goal})
    assert {q for q, _, with_goal in sim.score_calls} == set(LOCATE_QUESTIONS)  # no goal in any context
    assert not any(with_goal for _, _, with_goal in sim.score_calls)

    def x(frame):  # the judged x, as the env must read it
        return judge_location_frames(sim, "navigate", [frame])[0, 0]

    d0 = x(goal) - x(start)
    assert info["located_distance"] == pytest.approx(d0) and 3.9 < d0 < 4.1 and "judged_distance" not in info
    obs, reward, terminated, _, info = env.step("move forward 0.5 m")
    d1 = abs(x(goal) - x(obs["frame"]))
    assert info["located_distance"] == pytest.approx(d1) and reward == pytest.approx(d0 - d1) and not terminated
    assert info["located_place"][1:] == pytest.approx([4.0, 90.0], abs=1e-3)
    # From a frame placed at the goal: within the tolerances, the bonus, and the episode ends.
    env.reset(options={"start_image": goal, "goal_image": goal})
    _, reward, terminated, _, info = env.step("move forward 0.5 m")  # the fake moves a few grey levels
    assert terminated and info["is_success"] and reward == pytest.approx(3.0 - info["located_distance"], abs=1e-6)
    # Heading counts yaw_weight m per 180 degrees: a goal facing the other way is 1 m further.
    class Turned(LocatingFake):
        def place_of(self, frame):
            x, z, yaw = super().place_of(frame)
            return x, z, 270.0 if frame[..., 1].mean() > 100 else yaw
    sim = Turned(default_templates(large=False))
    env = make("BagelNavigate-v0", sim, reward="located", yaw_weight=1.0).unwrapped
    turned = goal.copy()
    turned[..., 1] = 200
    _, info = env.reset(options={"start_image": goal, "goal_image": turned})
    assert info["located_distance"] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="location judge; tasks with one: \\['navigate'\\]"):
        make("BagelManipulate-v0", reward="located")
    with pytest.raises(ValueError, match="located_radius must be a finite number >= 0, got -1"):
        make("BagelNavigate-v0", reward="located", located_radius=-1)


def test_judged_reward_progress_weight_scales_the_distance_term_only():
    from bagel_world.simulator.progress import REACHED_QUESTION

    sim = fake()
    rng = np.random.default_rng(1)
    goal = np.full((H, W, 3), 128, np.uint8)
    start = np.clip(goal.astype(int) + rng.integers(-120, 121, (H, W, 3)), 0, 255).astype(np.uint8)
    rewards = {}
    for w in (1.0, 0.25, 0.0):
        env = make("BagelNavigate-v0", sim, success_bonus=3.0, progress_weight=w)
        _, info0 = env.reset(options={"start_image": start, "goal_image": goal})
        _, reward, terminated, _, info = env.step("move forward 0.5 m")
        assert not terminated
        rewards[w] = (reward, None if w == 0 else info0["judged_distance"] - info["judged_distance"])
    assert rewards[1.0][0] == pytest.approx(rewards[1.0][1]) and rewards[1.0][1] != 0
    assert rewards[0.25][0] == pytest.approx(0.25 * rewards[0.25][1])
    assert rewards[0.0][0] == 0.0  # sparse: only the reached bonus pays
    env = make("BagelNavigate-v0", sim, progress_weight=0.0)
    sim.score_calls.clear()
    _, info = env.reset(options={"start_image": start, "goal_image": goal})
    env.step("move forward 0.5 m")
    assert info["judged_distance"] is None and {q for q, _, _ in sim.score_calls} == {REACHED_QUESTION}
    env = make("BagelNavigate-v0", sim, success_bonus=3.0, progress_weight=0.0)
    env.reset(options={"start_image": goal, "goal_image": goal})
    _, reward, terminated, _, info = env.step("move forward 0.5 m")
    assert terminated and info["is_success"] and reward == 3.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=r"progress_weight must be a finite number >= 0, got"):
            make("BagelNavigate-v0", sim, progress_weight=bad)
    with pytest.raises(ValueError, match="needs reward='judged'"):
        make("BagelNavigate-v0", sim, reward="feature", progress_weight=0.0)


def test_future_frame_reward_is_p_yes_of_the_question():
    env = make("BagelFutureFrame-v0", question="Is the red ball on the left?")
    _, info = env.reset(seed=0)
    assert info["question"] == "Is the red ball on the left?"
    _, info = env.reset(seed=0, options={"question": "Did the box fall?"})
    assert info["question"] == "Did the box fall?"
    _, reward, _, _, info = env.step("wait 0.5 s")
    assert 0.0 <= info["p_yes"] <= 1.0 and reward == pytest.approx(info["p_yes"])


def test_multiview_novelty():
    env = make("BagelMultiview-v0")
    env.reset(seed=0)
    rewards = [env.step("orbit left 30 degrees")[1] for _ in range(3)]
    assert all(0.0 <= r <= 2.0 for r in rewards)


def test_simulator_is_shared_between_envs(monkeypatch):
    import bagel_world.simulator as simulator_pkg
    from bagel_world.envs import clear_simulator_cache

    made = []
    monkeypatch.setattr(simulator_pkg, "make_simulator",
                        lambda checkpoint=None, backend=None, device=None: made.append(checkpoint) or fake())
    clear_simulator_cache()
    try:
        a = gym.make("BagelNavigate-v0", checkpoint="ckpt-a")
        b = gym.make("BagelMultiview-v0", checkpoint="ckpt-a")
        c = gym.make("BagelNavigate-v0", checkpoint="ckpt-b")
        assert a.unwrapped.simulator is b.unwrapped.simulator is not c.unwrapped.simulator
        assert made == ["ckpt-a", "ckpt-b"]
    finally:
        clear_simulator_cache()


# ---- wrappers --------------------------------------------------------------------------------
def test_wrapper_round_trip():
    env = make("BagelMultiview-v0", max_episode_steps=3)  # TimeLimit from the registration kwarg
    env = gym.wrappers.GrayscaleObservation(env, keep_dim=True)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (H, W, 1) and obs.dtype == np.uint8
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step("orbit left 30 degrees")
        assert obs in env.observation_space
    assert truncated and not terminated
    assert info["episode"]["l"] == 3 and np.isfinite(info["episode"]["r"])


def test_resize_observation():
    pytest.importorskip("cv2", reason="ResizeObservation needs opencv (pip install 'gymnasium[other]')")
    env = gym.wrappers.ResizeObservation(make("BagelMultiview-v0", max_episode_steps=2), (32, 32))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3)
    obs, *_ = env.step("zoom in")
    assert obs in env.observation_space


def test_record_video(tmp_path):
    pytest.importorskip("moviepy", reason="RecordVideo needs moviepy (pip install moviepy)")
    env = make("BagelNavigate-v0", render_mode="rgb_array", max_episode_steps=3)
    env = gym.wrappers.RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda ep: True,
                                   disable_logger=True)
    env.reset(seed=0)
    for _ in range(3):
        env.step("move forward 0.5 m")
    env.close()
    assert list((tmp_path / "videos").glob("*.mp4"))


def test_render():
    env = make("BagelNavigate-v0", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.render(), obs["frame"])
    obs, *_ = env.step("turn left 30 degrees")
    assert np.array_equal(env.render(), obs["frame"])
    assert make("BagelNavigate-v0").unwrapped.render() is None
    assert bagel_world.envs.BagelNavigateEnv.metadata["render_fps"] > 0


def test_deepcopy_forks_the_session_and_leaves_the_parent_alone():
    import copy

    sim = FakeSimulator(default_templates(False))
    env = gym.make("BagelMultiview-v0", simulator=sim)
    env.reset(seed=3)
    env.step("zoom in")
    branch = copy.deepcopy(env)
    assert branch.unwrapped.session_id != env.unwrapped.session_id
    assert branch.unwrapped.simulator is sim
    parent_frame = sim.frame(env.unwrapped.session_id)
    b_obs, *_ = branch.step("orbit left 30 degrees")
    assert np.array_equal(sim.frame(env.unwrapped.session_id), parent_frame)
    p_obs, *_ = env.step("orbit left 30 degrees")
    assert np.array_equal(p_obs, b_obs)  # same RNG state, same session contents
