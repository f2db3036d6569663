"""Env-level episodes over HTTP, and `gym.make(..., backend=url)`, against local envs."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
gym = pytest.importorskip("gymnasium")
from fakes import FakeSimulator  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from test_server import assert_error, decode, frame  # noqa: E402

import bagel_world.envs  # noqa: E402,F401  (registers the ids)
from bagel_world.server import ServerSettings, create_app  # noqa: E402
from bagel_world.server.images import png_b64  # noqa: E402
from bagel_world.server.testing import run_in_thread  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402

TEMPLATES = default_templates(large=False)
ENV_IDS = ("BagelNavigate-v0", "BagelMultiview-v0", "BagelFutureFrame-v0", "BagelManipulate-v0")


def client(sim=None, **settings) -> TestClient:
    app = create_app(sim if sim is not None else FakeSimulator(TEMPLATES), ServerSettings(**settings))
    return TestClient(app, base_url="http://127.0.0.1:8000")  # a loopback Host: no-token servers need one


def local_env(env_id: str):
    return gym.make(env_id, simulator=FakeSimulator(TEMPLATES), disable_env_checker=True)


def obs_frame(obs) -> np.ndarray:
    return obs["frame"] if isinstance(obs, dict) else obs


def strip_latency(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "step_latency_s"}


def test_env_catalogue():
    with client() as c:
        envs = {e["env_id"]: e for e in c.get("/v1/envs").json()["envs"]}
    assert set(envs) == set(ENV_IDS)
    nav = envs["BagelNavigate-v0"]
    assert tuple(nav["actions"]) == TEMPLATES["navigate"].canonical_actions
    assert nav["has_goal"] and not envs["BagelMultiview-v0"]["has_goal"]
    assert nav["resolution"] == [64, 64] and nav["max_episode_steps"] == 64
    assert nav["description"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episode_over_http_equals_local_env(env_id):
    env = local_env(env_id)
    obs, info = env.reset(seed=11)
    actions = [0, "turn left 30 degrees", 3, "look around"]
    canonical = env.unwrapped.template.canonical_actions
    with client() as c:
        r = c.post(f"/v1/envs/{env_id}/episodes", json={"seed": 11})
        assert r.status_code == 201, r.text
        ep = r.json()
        np.testing.assert_array_equal(decode(ep["frame"]), obs_frame(obs))
        if isinstance(obs, dict):
            np.testing.assert_array_equal(decode(ep["goal"]), obs["goal"])
        assert ep["info"] == info
        total = 0.0
        for t, a in enumerate(actions):
            want = env.step(canonical[a] if isinstance(a, int) else a)
            r = c.post(f"/v1/episodes/{ep['episode_id']}/step", json={"action": a})
            assert r.status_code == 200, r.text
            got = r.json()
            np.testing.assert_array_equal(decode(got["frame"]), obs_frame(want[0]))
            assert got["reward"] == pytest.approx(want[1], abs=1e-6)
            assert (got["terminated"], got["truncated"]) == (want[2], want[3])
            assert strip_latency(got["info"]) == pytest.approx(strip_latency(want[4]))
            total += want[1]
            assert got["step"] == t + 1 and got["episode_return"] == pytest.approx(total, abs=1e-5)
        raw = c.get(f"/v1/episodes/{ep['episode_id']}/frame", headers={"Accept": "image/png"})
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw.content))), obs_frame(want[0]))
        assert c.delete(f"/v1/episodes/{ep['episode_id']}").status_code == 200
        assert_error(c.get(f"/v1/episodes/{ep['episode_id']}/frame"), 404, "unknown_episode")
        assert c.get("/v1/metrics").json()["episodes"] == 0


def test_episode_from_uploaded_images_and_option_errors():
    start, goal = frame(1), frame(2)
    env = local_env("BagelNavigate-v0")
    obs, _ = env.reset(seed=0, options={"start_image": start, "goal_image": goal, "instruction": "find the red box"})
    with client() as c:
        body = {"seed": 0, "start_image": png_b64(start), "goal_image": png_b64(goal),
                "options": {"instruction": "find the red box"}}
        ep = c.post("/v1/envs/BagelNavigate-v0/episodes", json=body).json()
        np.testing.assert_array_equal(decode(ep["frame"]), obs["frame"])
        np.testing.assert_array_equal(decode(ep["goal"]), goal)
        assert ep["info"]["scene_index"] == -1
        # The env's own checks become 422s with its message.
        err = assert_error(c.post("/v1/envs/BagelNavigate-v0/episodes", json={"start_image": png_b64(start)}), 422)
        assert "goal_image" in err["message"]
        small = png_b64(frame(0, 32, 32))
        err = assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={"start_image": small}), 422,
                           "invalid_input")
        assert "shape" in err["message"]
        assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={"options": {"question": "moved?"}}), 422,
                     contains="question")
        assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={"options": {"scene_index": 10**6}}), 422)
        assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={"options": {"path": "/etc"}}), 422,
                     "invalid_request")
        assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={"seed": -3}), 422, "invalid_request")
        assert_error(c.post("/v1/envs/CartPole-v1/episodes", json={}), 404, "unknown_env")
        assert c.get("/v1/metrics").json()["episodes"] == 1  # failed creations hold no slot


def test_episode_step_errors_finish_and_gif():
    with client(max_action_length=24) as c:
        eid = c.post("/v1/envs/BagelMultiview-v0/episodes", json={"seed": 1}).json()["episode_id"]
        step = lambda a: c.post(f"/v1/episodes/{eid}/step", json={"action": a})  # noqa: E731
        assert_error(step(6), 422, "invalid_action", "0..5")
        assert_error(step("x" * 25), 422, "action_too_long")
        assert_error(step("caf\u00e9 au lait"), 422, "invalid_input", "printable")
        assert_error(step(1.5), 422, "invalid_request")
        assert_error(step(None), 422, "invalid_request")
        assert_error(c.post("/v1/episodes/ep-nope/step", json={"action": 0}), 404, "unknown_episode")
        n = 0
        while True:
            r = step(n % 6)
            assert r.status_code == 200, r.text
            n += 1
            if r.json()["terminated"] or r.json()["truncated"]:
                break
        assert n <= 24  # BagelMultiview-v0 is registered with max_episode_steps=24
        assert_error(step(0), 409, "episode_finished")
        gif = c.get(f"/v1/episodes/{eid}/gif")
        assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
        assert "attachment" in gif.headers["content-disposition"]
        img = Image.open(io.BytesIO(gif.content))
        assert img.format == "GIF" and img.n_frames >= 2 and img.size == (64, 64)


def test_forked_episode_continues_like_the_original():
    with client() as c:
        eid = c.post("/v1/envs/BagelNavigate-v0/episodes", json={"seed": 3}).json()["episode_id"]
        c.post(f"/v1/episodes/{eid}/step", json={"action": 0})
        r = c.post(f"/v1/episodes/{eid}/fork")
        assert r.status_code == 201, r.text
        fid = r.json()["episode_id"]
        a = c.post(f"/v1/episodes/{eid}/step", json={"action": "turn left 30 degrees"}).json()
        b = c.post(f"/v1/episodes/{fid}/step", json={"action": "turn left 30 degrees"}).json()
        assert a["frame"] == b["frame"] and a["reward"] == b["reward"] and b["step"] == 2
        # ...and independently: the fork's session is its own.
        c.post(f"/v1/episodes/{fid}/step", json={"action": 1})
        assert c.get(f"/v1/episodes/{eid}/frame").json()["frame"] == a["frame"]
        c.delete(f"/v1/episodes/{eid}")
        assert c.post(f"/v1/episodes/{fid}/step", json={"action": 2}).status_code == 200


def test_episodes_count_towards_max_sessions_and_expire():
    with client(max_sessions=2, session_ttl_s=0.3) as c:
        a = c.post("/v1/envs/BagelMultiview-v0/episodes", json={}).json()["episode_id"]
        c.post("/v1/envs/BagelMultiview-v0/episodes", json={})
        assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={}), 429, "too_many_sessions")
        assert_error(c.post(f"/v1/episodes/{a}/fork"), 429, "too_many_sessions")
        time.sleep(0.5)
        assert_error(c.post(f"/v1/episodes/{a}/step", json={"action": 0}), 404, "episode_expired", "expired")
        assert c.post("/v1/envs/BagelMultiview-v0/episodes", json={}).status_code == 201


def test_gym_make_with_backend_url_equals_local():
    from bagel_world.envs import clear_simulator_cache

    with run_in_thread(create_app(FakeSimulator(TEMPLATES))) as url:
        for env_id in ("BagelNavigate-v0", "BagelFutureFrame-v0"):
            remote = gym.make(env_id, backend=url)
            local = local_env(env_id)
            ro, ri = remote.reset(seed=7)
            lo, li = local.reset(seed=7)
            np.testing.assert_array_equal(obs_frame(ro), obs_frame(lo))
            assert ri == li
            for a in ["move forward 0.5 m", "wait 0.5 s", "turn right 30 degrees"]:
                rs, ls = remote.step(a), local.step(a)
                np.testing.assert_array_equal(obs_frame(rs[0]), obs_frame(ls[0]))
                assert rs[1:4] == pytest.approx(ls[1:4])
                assert strip_latency(rs[4]) == pytest.approx(strip_latency(ls[4]))
            remote.close()
        clear_simulator_cache()


def test_concurrent_episodes_share_batches():
    sim = FakeSimulator(TEMPLATES)
    n_clients, n_steps = 8, 4
    errors = []
    with run_in_thread(create_app(sim, ServerSettings(max_batch_wait_ms=20))) as url:
        import httpx

        barrier = threading.Barrier(n_clients)

        def run(k):
            try:
                with httpx.Client(base_url=url, timeout=60) as c:
                    eid = c.post("/v1/envs/BagelMultiview-v0/episodes", json={"seed": k}).json()["episode_id"]
                    barrier.wait()
                    for t in range(n_steps):
                        c.post(f"/v1/episodes/{eid}/step", json={"action": t}).raise_for_status()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    assert sim.step_calls < n_clients * n_steps


def test_episode_image_upload_limits():
    with client(max_image_side=32) as c:
        r = c.post("/v1/envs/BagelMultiview-v0/episodes", json={"start_image": png_b64(frame(0))})
        assert_error(r, 413, "image_too_large")
        buf = io.BytesIO()
        Image.fromarray(frame(0)).save(buf, format="WEBP")
        webp = base64.b64encode(buf.getvalue()).decode()
        r = c.post("/v1/envs/BagelMultiview-v0/episodes", json={"start_image": webp})
        assert_error(r, 422, "unsupported_image_format", "PNG")


def test_failed_model_call_in_an_episode_is_a_5xx_and_the_episode_goes_on():
    from test_server import FlakySimulator

    with client(FlakySimulator(TEMPLATES)) as c:
        eid = c.post("/v1/envs/BagelMultiview-v0/episodes", json={"seed": 0}).json()["episode_id"]
        assert_error(c.post(f"/v1/episodes/{eid}/step", json={"action": "boom"}), 503, "out_of_memory")
        r = c.post(f"/v1/episodes/{eid}/step", json={"action": 0})
        assert r.status_code == 200 and r.json()["step"] == 1


def test_gym_make_with_backend_uses_the_servers_scenarios(tmp_path):
    from bagel_world.envs import clear_simulator_cache
    from bagel_world.simulator.scenarios import ScenarioSet

    rng = np.random.default_rng(1)
    ScenarioSet(rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)).save(tmp_path / "scenarios" / "multiview.npz")
    served, mine = FakeSimulator(TEMPLATES), FakeSimulator(TEMPLATES)
    served.checkpoint_dir = mine.checkpoint_dir = tmp_path
    with run_in_thread(create_app(served)) as url:
        remote = gym.make("BagelMultiview-v0", backend=url)
        local = gym.make("BagelMultiview-v0", simulator=mine)
        for seed in range(3):
            np.testing.assert_array_equal(remote.reset(seed=seed)[0], local.reset(seed=seed)[0])
            np.testing.assert_array_equal(remote.step("zoom in")[0], local.step("zoom in")[0])
        remote.close()
    clear_simulator_cache()
