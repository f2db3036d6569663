"""The real-simulator envs (bagel_world.sims): grammar, spaces, determinism, action semantics.

Simulator tests skip with a reason when the `[sims]` packages are not installed; the
grammar tests need none. Frames are small (32x32) except where spaces are compared with
the imagined twins (their 64x64 template resolution).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

from bagel_world.sims import REAL_ENVS, explore_action, make_real, missing_packages, state_questions
from bagel_world.sims.grammar import accepted_forms, format_command, parse_action, varied_action
from bagel_world.simulator.tasks import CANONICAL_ACTIONS, TASK_NAMES

RES = (32, 32)


def _needs(task: str) -> None:
    missing = missing_packages(task)
    if missing:
        pytest.skip(f"simulator for {task!r} not installed (missing {missing}); pip install 'bagel-world[sims]'")


def _make(task: str, **kwargs) -> gym.Env:
    _needs(task)
    kwargs.setdefault("resolution", RES)
    return make_real(task, **kwargs)


@pytest.fixture(scope="module")
def envs():
    """One text-mode env per task, shared by the module (constructing Fetch/MiniWorld costs ~0.3 s)."""
    made: dict[str, gym.Env] = {}

    def get(task: str) -> gym.Env:
        if task not in made:
            made[task] = _make(task)
        return made[task]

    yield get
    for e in made.values():
        e.close()


def _frames(env: gym.Env, seed: int, actions: list[str]) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs["frame"] if isinstance(obs, dict) else obs]
    for a in actions:
        obs, *_ = env.step(a)
        out.append(obs["frame"] if isinstance(obs, dict) else obs)
    return out


# ---- grammar (no simulator needed) -------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_canonical_action_parses_and_round_trips(task):
    for text in CANONICAL_ACTIONS[task]:
        cmd = parse_action(task, text)
        assert parse_action(task, format_command(task, cmd)) == cmd
    rng = np.random.default_rng(0)
    for _ in range(50):
        parse_action(task, varied_action(task, rng))


def test_amounts_units_and_synonyms():
    assert parse_action("navigate", "turn left 45 degrees").amount == 45.0
    assert parse_action("navigate", "Turn LEFT 45°.").amount == 45.0
    assert parse_action("navigate", "move forward 50 cm").amount == pytest.approx(0.5)
    assert parse_action("navigate", "go back 1 m").direction == "backward"
    assert parse_action("multiview", "orbit up 10 degrees").amount == 10.0
    assert parse_action("multiview", "orbit up").amount == 15.0
    assert parse_action("future_frame", "wait 250 ms").amount == pytest.approx(0.25)
    assert parse_action("future_frame", "push red sphere forward 2 m/s").target == "red ball"
    assert parse_action("manipulate", "move the gripper up 10 cm").amount == pytest.approx(0.10)


@pytest.mark.parametrize("task,text", [
    ("navigate", "fly to the moon"), ("navigate", "turn left 30 m"), ("navigate", "turn left 720 degrees"),
    ("navigate", "orbit left 30 degrees"), ("multiview", "zoom in 3 degrees"), ("future_frame", "wait forever"),
    ("future_frame", "push the pink ball left"), ("manipulate", "move gripper sideways"), ("manipulate", ""),
])
def test_bad_text_raises_value_error_naming_text_and_forms(task, text):
    with pytest.raises(ValueError) as e:
        parse_action(task, text)
    msg = str(e.value)
    assert repr(text) in msg or "unit" in msg or "colour" in msg
    if "accepted forms" in msg:
        assert all(f in msg for f in accepted_forms(task))


def test_importing_sims_does_not_import_simulators():
    code = ("import sys, bagel_world, bagel_world.sims, gymnasium as gym; "
            "assert 'BagelNavigateReal-v0' in gym.registry; "
            "bad = [m for m in ('mujoco', 'miniworld', 'pyglet', 'gymnasium_robotics') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- every env -------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("mode", ["text", "discrete"])
def test_check_env(task, mode):
    from gymnasium.utils.env_checker import check_env

    env = _make(task, action_mode=mode)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
    finally:
        env.close()
    assert not [str(w.message) for w in caught if "WARN" in str(w.message)]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_same_seed_same_frames_across_instances_and_different_seeds_differ(task, envs):
    rng = np.random.default_rng(0)
    acts = [CANONICAL_ACTIONS[task][int(i)] for i in rng.integers(len(CANONICAL_ACTIONS[task]), size=6)]
    a = _frames(envs(task), 7, acts)
    other = _make(task)
    try:
        b = _frames(other, 7, acts)
    finally:
        other.close()
    c = _frames(envs(task), 8, acts)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_bad_actions_raise_value_error(task, envs):
    env = envs(task)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="accepted forms"):
        env.step("do a barrel roll")
    with pytest.raises(ValueError):
        env.step(3)  # an int in text mode
    denv = _make(task, action_mode="discrete")
    try:
        denv.reset(seed=0)
        with pytest.raises(ValueError, match="discrete action"):
            denv.step(len(CANONICAL_ACTIONS[task]))
    finally:
        denv.close()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_questions_are_fixed_per_task_and_exploration_speaks_the_grammar(task, envs):
    env = envs(task)
    obs, info = env.reset(seed=3)
    questions = [q for q, _ in state_questions(task, info)]
    rng = np.random.default_rng(0)
    for _ in range(12):
        action = explore_action(task, rng, info, vary=0.3)
        parse_action(task, action)
        obs, reward, terminated, truncated, info = env.step(action)
        qa = state_questions(task, info)
        assert [q for q, _ in qa] == questions
        assert all(isinstance(a, str) and a for _, a in qa)
        if terminated:
            obs, info = env.reset()


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("mode", ["text", "discrete"])
def test_spaces_equal_the_imagined_twin(task, mode):
    _needs(task)
    twin_module = {"navigate": ("bagel_world.envs.navigate", "BagelNavigateEnv"),
                   "multiview": ("bagel_world.envs.multiview", "BagelMultiviewEnv"),
                   "future_frame": ("bagel_world.envs.future_frame", "BagelFutureFrameEnv"),
                   "manipulate": ("bagel_world.envs.manipulate", "BagelManipulateEnv")}[task]
    try:
        twin_cls = getattr(importlib.import_module(twin_module[0]), twin_module[1])
        from fakes import FakeSimulator

        from bagel_world.simulator.tasks import default_templates
    except (ImportError, AttributeError) as e:
        pytest.skip(f"imagined twin not available: {e}")
    twin = twin_cls(simulator=FakeSimulator(default_templates(large=False)), action_mode=mode)
    real = _make(task, action_mode=mode, resolution=twin.resolution)
    try:
        assert real.observation_space == twin.observation_space
        assert real.action_space == twin.action_space
        obs, _ = real.reset(seed=0)
        assert twin.observation_space.contains(obs)
    finally:
        real.close()
        twin.close()


def test_registered_ids():
    for env_id, *_ in REAL_ENVS.values():
        assert env_id in gym.registry


# ---- action semantics ------------------------------------------------------------------------------
def _yaw_change(before: float, after: float) -> float:
    return (after - before + 180.0) % 360.0 - 180.0


def test_navigate_turns_and_moves_exactly(envs):
    env = envs("navigate")
    _, info = env.reset(seed=0)
    _, _, _, _, after = env.step("turn left 90 degrees")
    assert _yaw_change(info["agent_yaw_deg"], after["agent_yaw_deg"]) == pytest.approx(90.0, abs=1e-9)
    _, _, _, _, after2 = env.step("turn right 45 degrees")
    assert _yaw_change(after["agent_yaw_deg"], after2["agent_yaw_deg"]) == pytest.approx(-45.0, abs=1e-9)
    # Face the most open direction, then walk forward 0.5 m and strafe right 0.5 m.
    info = after2
    for _ in range(12):
        if info["clearance_ahead_m"] > 2.0 and info["clearance_right_m"] > 2.0:
            break
        _, _, _, _, info = env.step("turn left 30 degrees")
    assert info["clearance_ahead_m"] > 2.0
    yaw = np.radians(info["agent_yaw_deg"])
    p0 = np.array(info["agent_pos"])
    _, _, _, _, info = env.step("move forward 0.5 m")
    assert not info["blocked"]
    # MiniWorld's heading on its x-z floor: (cos yaw, -sin yaw)
    np.testing.assert_allclose(np.array(info["agent_pos"]) - p0, 0.5 * np.array([np.cos(yaw), -np.sin(yaw)]), atol=1e-9)
    p1 = np.array(info["agent_pos"])
    _, _, _, _, info = env.step("strafe right 0.5 m")
    if not info["blocked"]:
        right = 0.5 * np.array([np.sin(yaw), np.cos(yaw)])
        np.testing.assert_allclose(np.array(info["agent_pos"]) - p1, right, atol=1e-9)


def test_navigate_walls_block_moves(envs):
    env = envs("navigate")
    _, info = env.reset(seed=1)
    for _ in range(40):
        _, _, _, _, info = env.step("move forward 1 m")
        if info["blocked"]:
            break
    assert info["blocked"] and info["clearance_ahead_m"] < 1.0
    assert dict(state_questions("navigate", info))["Did you bump into a wall?"] == "yes"


def test_navigate_goal_image_is_the_view_from_the_goal_pose(envs):
    env = envs("navigate")
    obs, info = env.reset(seed=2)
    world = env.unwrapped.world
    goal_pose = np.array([info["goal_pos"][0], 0.0, info["goal_pos"][1]]), np.radians(info["goal_yaw_deg"])
    assert np.array_equal(env.unwrapped.render_from(*goal_pose), obs["goal"])  # and the agent stays put:
    assert np.array_equal(env.unwrapped._render_frame(), obs["frame"])
    world.agent.pos, world.agent.dir = goal_pose
    assert np.array_equal(env.unwrapped._render_frame(), obs["goal"])
    assert env.unwrapped._state()["is_success"]


def test_navigate_view_success_counts_any_pose_that_sees_the_box_like_the_goal_image():
    env = _make("navigate", layout="one_room", success="view")
    try:
        _, info = env.reset(seed=3)
        assert not info["view_success"] and info["view_distance"] > 0.5
        from bagel_world.sims.navigate import pose_facing

        world, agent = env.unwrapped.world, env.unwrapped.world.agent
        box, goal = np.asarray(world.box.pos, float), np.array([info["goal_pos"][0], 0.0, info["goal_pos"][1]])
        r, th0 = info["goal_box_distance"], np.arctan2(-(goal - box)[2], (goal - box)[0])
        for dth in np.radians(np.arange(90.0, 271.0, 10.0)):  # far round the circle from the goal spot
            pos, _ = pose_facing(box, r, th0 + dth)
            if any(rm.point_inside(pos) for rm in world.rooms) and not world.intersect(agent, pos, agent.radius):
                break
        else:
            pytest.fail("no free pose on the goal's circle")
        # stand 0.3 m farther out than the circle, facing the box, then step 0.3 m toward it
        agent.pos, agent.dir = pose_facing(box, r + 0.3, th0 + dth)
        env.unwrapped._prev_distance = env.unwrapped._state()["view_distance"]
        _, reward, terminated, _, info = env.step("move forward 0.3 m")
        assert info["view_distance"] < 0.05 and info["box_visible"] and abs(info["box_bearing_deg"]) < 5
        assert info["view_success"] and not info["pose_success"] and info["goal_distance"] > 1.0
        assert terminated and info["is_success"]
        assert reward == pytest.approx(0.3 + 1.0, abs=0.05)  # 0.3 m of progress to the circle, plus the bonus
    finally:
        env.close()


def test_navigate_progress_rules_on_poses_agree_with_the_env():
    """What training labels from recorded poses (`pose_progress`, both rules) is what the real
    env's info says, frame by frame, along a walk that reaches the goal view."""
    from bagel_world.sims import pose_progress, progress_poses

    env = _make("navigate", layout="one_room", success="view")
    try:
        _, info = env.reset(seed=3)
        rng, seen = np.random.default_rng(0), set()
        for _ in range(40):
            pose, goal = progress_poses("navigate", info)
            assert len(pose) == 5 and np.allclose(pose[3:], info["box_pos"]) and np.allclose(goal[3:], pose[3:])
            d, ok = pose_progress("navigate", pose, goal, "view", visible=info["box_visible"])
            assert d == pytest.approx(info["view_distance"], abs=1e-4) and ok == info["view_success"]
            d, ok = pose_progress("navigate", pose, goal, "pose")
            assert d == pytest.approx(info["goal_distance"], abs=1e-4) and ok == info["pose_success"]
            seen.add(info["view_success"])
            a = "move forward 0.5 m" if info["box_visible"] and abs(info["box_bearing_deg"]) < 15 and \
                info["view_distance"] > 0.4 and info["box_distance"] > info["goal_box_distance"] else \
                ["turn left 30 degrees", "move backward 0.5 m", "strafe right 0.5 m"][int(rng.integers(3))]
            _, _, terminated, _, info = env.step(a)
            if terminated:
                break
        assert info["view_success"]  # the walk reached the goal view, so both answers were checked
        with pytest.raises(ValueError, match="view rule needs"):
            pose_progress("navigate", pose[:3], goal[:3], "view")
        with pytest.raises(ValueError, match="unknown progress rule"):
            pose_progress("navigate", pose, goal, "near")
    finally:
        env.close()


def _panel_colours(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Pixels of each landmark colour, shaded as MiniWorld lights them (grey walls and floor,
    and the red box, match none)."""
    r, g, b = (frame[..., k].astype(int) for k in range(3))
    return {"green": (g > 90) & (r < 50) & (b < 50), "blue": (b > 90) & (r < 50) & (g < 50),
            "yellow": (r > 90) & (g > 90) & (b < 50), "purple": (b > 70) & (r > 35) & (g < 50) & (r < b)}


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_navigate_landmarks_change_the_view_only_and_survive_copies(how):
    plain, marked = _make("navigate", layout="one_room"), _make("navigate", layout="one_room", landmarks=True)
    try:
        for e in (plain, marked):
            e.reset(seed=5)
        seen = set()
        for _ in range(12):  # a full turn: every wall comes into view
            (o1, r1, *_, i1), (o2, r2, *_, i2) = plain.step("turn left 30 degrees"), marked.step("turn left 30 degrees")
            assert r1 == r2 and {k: v for k, v in i1.items() if k != "landmarks"} == \
                {k: v for k, v in i2.items() if k != "landmarks"}  # same layout, box, poses and goal
            assert i2["landmarks"] and not i1["landmarks"]
            for name, mask in _panel_colours(o2["frame"]).items():
                if mask.sum() >= 4:
                    seen.add(name)
            assert all(m.sum() < 4 for m in _panel_colours(o1["frame"]).values())  # the plain room has none
        assert seen == {"green", "blue", "yellow", "purple"}
    finally:
        plain.close()
    _check_copies_and_restored_states(marked, "navigate", how)
    with pytest.raises(ValueError, match="landmarks=True is defined for layouts \\['one_room'\\], not 'maze'"):
        make_real("navigate", layout="maze", landmarks=True)


def test_navigate_success_rule_is_checked():
    _needs("navigate")
    with pytest.raises(ValueError, match="success must be one of"):
        make_real("navigate", success="near")
    with pytest.raises(ValueError, match="needs goal='box'"):
        make_real("navigate", success="view", goal="pose")


def test_multiview_full_orbit_returns_the_first_frame(envs):
    env = envs("multiview")
    first, info = env.reset(seed=4)
    frames = [env.step("orbit left 30 degrees")[0] for _ in range(12)]
    assert np.array_equal(frames[-1], first)
    assert not np.array_equal(frames[0], first)
    assert env.step("orbit right 90 degrees")[4]["azimuth_deg"] == (info["azimuth_deg"] + 90.0) % 360.0


def test_multiview_elevation_zoom_and_clamping(envs):
    env = envs("multiview")
    _, info = env.reset(seed=5)
    _, _, _, _, up = env.step("orbit up 10 degrees")
    assert up["elevation_deg"] == info["elevation_deg"] - 10.0 and not up["clamped"]
    _, _, _, _, near = env.step("zoom in")
    assert near["distance_m"] == pytest.approx(info["distance_m"] - 0.5)
    _, _, _, _, top = env.step("orbit up 90 degrees")
    assert top["clamped"] and top["elevation_deg"] == -80.0


def test_future_frame_wait_moves_falling_objects_and_push_is_camera_relative(envs):
    env = envs("future_frame")
    obs, info = env.reset(seed=0)
    obs2, _, _, _, info2 = env.step("wait 0.1 s")
    assert not np.array_equal(obs, obs2)  # things fall
    assert info2["time_s"] == pytest.approx(0.1)
    red0 = info["objects"]["red ball"]["pos"][2]
    assert info2["objects"]["red ball"]["pos"][2] < red0
    env.step("wait 3 s")  # let everything settle
    state = env.unwrapped.data
    saved = (state.qpos.copy(), state.qvel.copy(), state.time)
    xs = {}
    for direction in ("left", "right"):
        env.unwrapped.data.qpos[:], env.unwrapped.data.qvel[:], env.unwrapped.data.time = saved
        _, _, _, _, info = env.step(f"push the red ball {direction}")
        xs[direction] = info["objects"]["red ball"]["image_xy"][0]
    assert xs["left"] < xs["right"]
    with pytest.raises(ValueError, match="not in the scene"):
        env.step("push the purple box left")


def test_future_frame_question_reward():
    env = _make("future_frame", question="Is the red ball on the ground?", terminate_on_success=True)
    try:
        _, info = env.reset(seed=0)
        assert info["question"] == "Is the red ball on the ground?" and info["answer"] == "no"
        for _ in range(20):
            _, reward, terminated, _, info = env.step("wait 0.1 s")
            if terminated:
                break
        assert terminated and reward == 1.0 and info["p_yes"] == 1.0
        with pytest.raises(ValueError, match="known questions"):
            env.reset(options={"question": "Is it lunch time?"})
    finally:
        env.close()


def test_manipulate_gripper_moves_about_5_cm_in_camera_directions(envs):
    env = envs("manipulate")
    _, info = env.reset(seed=0)
    assert info["gripper_open"]
    _, _, _, _, up = env.step("move gripper up")
    dz = up["gripper_pos"][2] - info["gripper_pos"][2]
    assert 0.045 < dz < 0.055
    _, _, _, _, left = env.step("move gripper left")
    assert left["gripper_image_xy"][0] < up["gripper_image_xy"][0]  # left in the image
    moved = np.linalg.norm(np.subtract(left["gripper_pos"], up["gripper_pos"]))
    assert 0.045 < moved < 0.055
    _, _, _, _, closed = env.step("close gripper")
    assert not closed["gripper_open"] and closed["gripper_command"] == "closed"
    _, _, _, _, opened = env.step("open gripper")
    assert opened["gripper_open"]


def test_manipulate_goal_image_shows_the_block_elsewhere(envs):
    env = envs("manipulate")
    obs, info = env.reset(seed=1)
    assert not np.array_equal(obs["frame"], obs["goal"])
    assert info["goal_distance"] > 0.05
    # rendering the goal restores the simulation: the same seed gives the same first step
    a = env.step("move gripper down")[0]["frame"]
    env.reset(seed=1)
    assert np.array_equal(env.step("move gripper down")[0]["frame"], a)


def test_multiview_goal_view_is_reachable_with_canonical_actions(envs):
    env = envs("multiview")
    obs, info = env.reset(seed=6)
    az, el, dist = info["goal_azimuth_deg"], info["goal_elevation_deg"], info["goal_distance_m"]
    for _ in range(round(((az - info["azimuth_deg"]) % 360.0) / 30.0)):
        obs, _, _, _, info = env.step("orbit right 30 degrees")
    while info["elevation_deg"] != el:
        obs, _, _, _, info = env.step("orbit up 15 degrees" if info["elevation_deg"] > el else "orbit down 15 degrees")
    while info["distance_m"] != dist:
        obs, _, _, _, info = env.step("zoom in" if info["distance_m"] > dist else "zoom out")
    assert info["at_goal_view"] and np.array_equal(obs, env.unwrapped.goal_frame)


# ---- exact state save/restore and copies (issue: "Real twins cannot be copied") ------------------
def _assert_same_step(a: tuple, b: tuple) -> None:
    """Two step results are identical: observation bytes, reward, flags and info (NaNs equal)."""
    ia, ib = ({k: v for k, v in out[4].items() if k != "step_latency_s"} for out in (a, b))
    np.testing.assert_equal([a[0], *a[1:4], ia], [b[0], *b[1:4], ib])


def _copy(env: gym.Env, how: str) -> gym.Env:
    import copy
    import pickle

    return copy.deepcopy(env) if how == "deepcopy" else pickle.loads(pickle.dumps(env))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("task", TASK_NAMES)
def test_copies_and_restored_states_continue_exactly(task, how):
    _check_copies_and_restored_states(_make(task), task, how)  # as gym.make wraps it: the wrappers are copied too


def _check_copies_and_restored_states(env: gym.Env, task: str, how: str) -> None:
    twin = None
    try:
        rng = np.random.default_rng(0)
        _, info = env.reset(seed=3)
        for _ in range(3):
            *_, info = env.step(explore_action(task, rng, info, vary=0.3))
        state = env.unwrapped.get_state()
        twin = _copy(env, how)
        assert twin.unwrapped is not env.unwrapped
        # the copy runs ahead alone, then the original follows: same steps, bit for bit
        actions, ahead, i = [], [], info
        for _ in range(3):
            actions.append(explore_action(task, rng, i, vary=0.3))
            ahead.append(twin.step(actions[-1]))
            i = ahead[-1][4]
        for action, expected in zip(actions, ahead, strict=True):
            _assert_same_step(env.step(action), expected)
        # diverge, then restore the saved state into both: the same steps again
        twin.step(env.unwrapped.get_action_meanings()[-1])
        for e in (env, twin):
            e.unwrapped.set_state(state)
            for action, expected in zip(actions, ahead, strict=True):
                _assert_same_step(e.step(action), expected)
        # a state of another episode restores too (MiniWorld rebuilds that episode's layout)
        env.reset(seed=11)
        env.unwrapped.set_state(state)
        _assert_same_step(env.step(actions[0]), ahead[0])
    finally:
        env.close()
        if twin is not None:
            twin.close()


def test_set_state_checks_the_state_and_a_fresh_state_needs_a_reset():
    import pickle

    env = _make("multiview")
    other = _make("multiview", resolution=(24, 24))
    try:
        fresh = env.unwrapped.get_state()
        env.reset(seed=0)
        with pytest.raises(ValueError, match="cannot be restored"):
            other.unwrapped.set_state(env.unwrapped.get_state())
        with pytest.raises(TypeError, match="get_state"):
            env.unwrapped.set_state({"frame": None})
        env.unwrapped.set_state(pickle.loads(pickle.dumps(fresh)))
        with pytest.raises(gym.error.ResetNeeded):
            env.unwrapped.step("zoom in")
    finally:
        env.close()
        other.close()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_action_from_a_saved_state_equals_replaying_it(task):
    """`real_each` (eval's controllability, `record --branches`) restores a saved state before
    each action; that gives the same frames as replaying the episode from its reset."""
    from bagel_world.training.controllability import real_each

    class ReplayOnly:  # the same env without get_state/set_state: real_each replays per action
        def __init__(self, env):
            self.reset, self.step = env.reset, env.step

    env = _make(task).unwrapped
    try:
        canon = list(CANONICAL_ACTIONS[task])
        prefix = [canon[i] for i in np.random.default_rng(1).integers(0, len(canon), 5)]
        restored = real_each(env, 4, prefix, canon)
        assert restored.shape == (len(canon), *RES, 3)
        np.testing.assert_array_equal(restored, real_each(ReplayOnly(env), 4, prefix, canon))
    finally:
        env.close()
