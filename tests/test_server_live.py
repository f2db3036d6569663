"""A real uvicorn on loopback: concurrent clients, batching, RemoteSimulator, fuzzing."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fakes import FakeSimulator, TimedFakeSimulator  # noqa: E402
from test_server import FlakySimulator, decode, frame  # noqa: E402

from bagel_world.server import ServerSettings, create_app  # noqa: E402
from bagel_world.server.testing import run_in_thread  # noqa: E402
from bagel_world.simulator.remote import RemoteSimulator  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402

TEMPLATES = default_templates(large=False)
ACTIONS = TEMPLATES["navigate"].canonical_actions


def test_32_concurrent_clients_get_their_own_frames_and_are_batched():
    n_clients, n_steps = 32, 6
    sim = TimedFakeSimulator(TEMPLATES, step_ms=5)  # a fixed time per batched step, like a model call
    app = create_app(sim, ServerSettings(max_batch_size=32, max_batch_wait_ms=10))
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []
    with run_in_thread(app) as url:
        barrier = threading.Barrier(n_clients)

        def client(k: int) -> None:
            try:
                with httpx.Client(base_url=url, timeout=60) as c:
                    sid = c.post("/v1/sessions", json={"task": "navigate", "frames": [_b64(frame(k))]}).json()[
                        "session_id"]
                    barrier.wait()
                    got = []
                    for t in range(n_steps):
                        action = ACTIONS[(k + t) % len(ACTIONS)]
                        body = {"session_ids": [sid], "actions": [action], "seeds": [k * 100 + t]}
                        r = c.post("/v1/sessions/step", json=body)
                        r.raise_for_status()
                        got.append(decode(r.json()["outputs"][0]["frame"]))
                    results[k] = got
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        metrics = httpx.get(url + "/v1/metrics").json()
    assert not errors, errors[:3]
    assert sorted(results) == list(range(n_clients))
    # Nothing lost or mixed up: each client's frames are exactly a local one-at-a-time replay.
    local = FakeSimulator(TEMPLATES)
    for k in range(n_clients):
        lid = local.open("navigate", [frame(k)])
        for t in range(n_steps):
            want = local.step([lid], [ACTIONS[(k + t) % len(ACTIONS)]], [k * 100 + t])[0].frame
            np.testing.assert_array_equal(results[k][t], want, err_msg=f"client {k} step {t}")
    # And they were batched: fewer model calls than step requests.
    n_requests = n_clients * n_steps
    assert sim.step_calls < n_requests / 2, (sim.step_calls, n_requests)
    assert metrics["steps_run"] == n_requests
    assert metrics["mean_batch_size"] > 2.0


def test_same_session_steps_are_serialised_in_order():
    """Two concurrent steps of one session never share a batch; both apply, in some order."""
    sim = FakeSimulator(TEMPLATES)
    with run_in_thread(create_app(sim, ServerSettings(max_batch_wait_ms=20))) as url:
        remote = RemoteSimulator(url)
        sid = remote.open("navigate", [frame(0)])
        outs: list = []
        threads = [threading.Thread(target=lambda i=i: outs.append(remote.step([sid], ["a"], [i])[0]))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(o.frame_index for o in outs) == [1, 2, 3, 4]
        remote.disconnect()


def _b64(f):
    from bagel_world.server.images import png_b64

    return png_b64(f)


def test_remote_simulator_equals_local():
    local = FakeSimulator(TEMPLATES)
    with run_in_thread(create_app(FakeSimulator(TEMPLATES), ServerSettings(token="tok"))) as url:
        with RemoteSimulator(url, token="tok") as remote:
            assert remote.tasks() == local.tasks()
            rs = [remote.open("navigate", [frame(i)]) for i in range(3)]
            ls = [local.open("navigate", [frame(i)]) for i in range(3)]
            for t in range(3):
                acts = [ACTIONS[(i + t) % 6] for i in range(3)]
                seeds = [7 * i + t for i in range(3)]
                ro, lo = remote.step(rs, acts, seeds), local.step(ls, acts, seeds)
                for a, b in zip(ro, lo):
                    np.testing.assert_array_equal(a.frame, b.frame)
                    assert a.frame_index == b.frame_index and a.text == b.text
            # Planners fork remote sessions and branch.
            rf, lf = remote.fork(rs[0]), local.fork(ls[0])
            np.testing.assert_array_equal(remote.step([rf], ["zoom"], [1])[0].frame,
                                          local.step([lf], ["zoom"], [1])[0].frame)
            np.testing.assert_array_equal(remote.frame(rs[0]), local.frame(ls[0]))
            np.testing.assert_array_equal(remote.embed([frame(9)]), local.embed([frame(9)]))
            np.testing.assert_allclose(remote.score(rs, "q?", ["yes", "no"]), local.score(ls, "q?", ["yes", "no"]),
                                       rtol=1e-6)
            # Goal-conditioned questions carry one goal image per session.
            goals = [frame(5), frame(6), frame(7)]
            bins = ["0", "1", "2", "3"]
            np.testing.assert_allclose(remote.score(rs, "How far?", bins, goals=goals),
                                       local.score(ls, "How far?", bins, goals=goals), rtol=1e-6)
            with pytest.raises(ValueError, match="goals: one per session"):
                remote.score(rs, "How far?", bins, goals=goals[:2])
            assert remote.step([], [], []) == []
            # Errors come back as the local simulator's exception types, with the server's message.
            remote.close(rf)
            with pytest.raises(KeyError, match="unknown_session"):
                remote.frame(rf)
            with pytest.raises(ValueError, match="unknown task"):
                remote.open("fly", [frame(0)])
            with pytest.raises(ValueError, match="action"):
                remote.step([rs[0]], [""], [0])
        with pytest.raises(PermissionError, match="401"):
            RemoteSimulator(url, token="wrong").tasks()
        with pytest.raises(PermissionError):
            RemoteSimulator(url).tasks()
        metrics = httpx.get(url + "/v1/metrics", headers={"Authorization": "Bearer tok"}).json()
        assert metrics["sessions"] == 0  # the context manager closed what it opened
    with pytest.raises(ConnectionError, match="cannot reach"):
        RemoteSimulator(url, timeout=2).tasks()


def test_remote_simulator_surfaces_model_failures():
    with run_in_thread(create_app(FlakySimulator(TEMPLATES))) as url:
        remote = RemoteSimulator(url)
        sid = remote.open("navigate", [frame(0)])
        with pytest.raises(RuntimeError, match="out of memory"):
            remote.step([sid], ["boom"], [0])
        assert remote.step([sid], ["fine"], [0])[0].frame_index == 1
        remote.disconnect()


@pytest.mark.slow
def test_openapi_fuzz_gives_no_5xx():
    """Every operation of the OpenAPI schema, fuzzed; half the cases aimed at live ids.

    Random ids only reach the 404 path, so every other case has its session/episode/env
    ids (path and body) swapped for live ones: the fuzzed actions, seeds and options then
    reach the simulator and the envs.
    """
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    app = create_app(FakeSimulator(TEMPLATES), ServerSettings(max_sessions=1000, session_ttl_s=60))
    failures, counter = [], iter(range(10**9))
    with run_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        def new_session() -> str:
            body = {"task": "navigate", "frames": [_b64(frame(0))]}
            return http.post("/v1/sessions", json=body).raise_for_status().json()["session_id"]

        def new_episode() -> str:
            return http.post("/v1/envs/BagelMultiview-v0/episodes", json={}).raise_for_status().json()["episode_id"]

        def aim_at_live_ids(case) -> None:
            pp = case.path_parameters or {}
            live = {"session_id": new_session, "episode_id": new_episode,
                    "env_id": lambda: "BagelNavigate-v0", "task": lambda: "navigate"}
            for key, make in live.items():
                if key in pp:
                    pp[key] = make()
            if isinstance(case.body, dict) and isinstance(case.body.get("session_ids"), list):
                case.body["session_ids"] = [new_session() for _ in case.body["session_ids"][:4]]

        def fuzz(operation) -> None:
            @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(operation.as_strategy())
            def check(case):
                if next(counter) % 2:
                    aim_at_live_ids(case)
                r = case.call()
                if r.status_code >= 500:
                    failures.append((operation.label, r.status_code, r.text[:200]))
                    return
                ctype = r.headers.get("content-type", [""])
                ctype = ctype[0] if isinstance(ctype, list) else ctype
                # Every answer, error or not, is JSON, or the binary the operation documents.
                assert ctype.startswith(("application/json", "image/png", "image/gif", "application/octet-stream")), (
                    operation.label, ctype)
                if r.status_code >= 400:
                    assert set(r.json()["error"]) >= {"code", "message"}, (operation.label, r.text)

            check()

        for op in schemathesis.openapi.from_url(url + "/openapi.json").get_all_operations():
            fuzz(op.ok())
    assert not failures, failures[:5]


def test_remote_embed_splits_requests_within_server_limits():
    local = FakeSimulator(TEMPLATES)
    frames = [frame(i) for i in range(7)]
    sim = FakeSimulator(TEMPLATES)
    calls = []
    real_embed = sim.embed
    sim.embed = lambda fs: calls.append(len(fs)) or real_embed(fs)
    with run_in_thread(create_app(sim, ServerSettings(max_frames_per_request=3))) as url:
        remote = RemoteSimulator(url)
        np.testing.assert_array_equal(remote.embed(frames), local.embed(frames))
        remote.disconnect()
    assert calls == [3, 3, 1]


def test_remote_simulator_mirrors_the_servers_scenarios(tmp_path):
    from bagel_world.simulator.scenarios import ScenarioSet

    rng = np.random.default_rng(0)
    own = ScenarioSet(rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8),
                      rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), [f"go {i}" for i in range(5)])
    own.save(tmp_path / "scenarios" / "navigate.npz")
    sim = FakeSimulator(TEMPLATES)
    sim.checkpoint_dir = tmp_path
    with run_in_thread(create_app(sim)) as url:
        assert httpx.get(url + "/v1/tasks/navigate/scenarios").status_code == 200
        assert httpx.get(url + "/v1/tasks/multiview/scenarios").json()["error"]["code"] == "no_scenarios"
        assert httpx.get(url + "/v1/tasks/..%2Fetc/scenarios").status_code == 404
        remote = RemoteSimulator(url)
        got = remote.scenarios("navigate")
        np.testing.assert_array_equal(got.frames, own.frames)
        np.testing.assert_array_equal(got.goals, own.goals)
        assert got.instructions == own.instructions
        assert remote.shipped_scenarios("multiview") is None
        # Where the server ships none, both sides draw the same procedural scenes.
        np.testing.assert_array_equal(remote.scenarios("multiview").frames, sim.scenarios("multiview").frames)
        assert remote.checkpoint_dir is None  # nothing of the server's is on this disk
        remote.disconnect()
    # A server whose checkpoint ships none: the client has none either (both go procedural).
    with run_in_thread(create_app(FakeSimulator(TEMPLATES))) as url:
        assert RemoteSimulator(url).shipped_scenarios("navigate") is None
