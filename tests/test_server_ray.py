"""The server on Ray Serve (`bagel-world serve --ray`): two simulator replicas behind the router.

A local Ray instance is started and stopped by the module fixture (CI needs no service). The
replicas serve the model-free fake with a fixed cost per step call, so what is tested is the
routing: every step reaches the replica that holds its session, forks stay there, a killed
replica loses only its own sessions (clear 503/410 naming them), and nothing is lost or mixed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fakes import FakeSimulator, TimedFakeFactory

from bagel_world.server import ServerSettings
from bagel_world.server.images import decode_png_b64, png_b64
from bagel_world.simulator.tasks import default_templates

ray = pytest.importorskip("ray", reason="the Ray Serve tests need the [ray] extra: pip install 'bagel-world[ray]'")
serve = pytest.importorskip("ray.serve")

from bagel_world.server.ray_serve import APP_NAME, REPLICA_HEADER, build_app, parse_address  # noqa: E402

pytestmark = pytest.mark.slow

TOKEN = "ray-test-token"
MAX_BODY = 200_000
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEMPLATES = default_templates(large=False)
TASK = "navigate"
START = np.random.default_rng(0).integers(0, 256, (*TEMPLATES[TASK].resolution, 3), dtype=np.uint8)
ACTIONS = list(TEMPLATES[TASK].canonical_actions)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    tests_dir = str(Path(__file__).resolve().parent)  # the replicas import the fake from here
    path = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(TimedFakeFactory(step_ms=5), ServerSettings(token=TOKEN, max_body_bytes=MAX_BODY), replicas=2,
                            health_check_period_s=1, probe_s=0.5), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _open(http: httpx.Client) -> tuple[str, int]:
    r = http.post("/v1/sessions", json={"task": TASK, "frames": [png_b64(START)]})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    return sid, int(r.headers[REPLICA_HEADER])


def _step(http: httpx.Client, sids: list[str], actions: list[str], seeds: list[int]) -> httpx.Response:
    return http.post("/v1/sessions/step", json={"session_ids": sids, "actions": actions, "seeds": seeds})


def _frame(out: dict) -> np.ndarray:
    return decode_png_b64(out["frame"], max_side=512, max_pixels=512 * 512, what="frame")


def _replay(actions: list[str], seeds: list[int]) -> list[np.ndarray]:
    sim = FakeSimulator(TEMPLATES)
    sid = sim.open(TASK, [START])
    return [sim.step([sid], [a], [s])[0].frame for a, s in zip(actions, seeds, strict=True)]


def test_concurrent_clients_are_served_by_their_sessions_replica_and_forks_stay_there(url):
    n, steps, fork_at = 12, 8, 4
    results: dict[int, dict] = {}
    failures: list[str] = []

    def client(k: int) -> None:
        try:
            run(k)
        except Exception as exc:
            failures.append(f"client {k}: {exc!r}")

    def run(k: int) -> None:
        rng = np.random.default_rng(k)
        acts = [ACTIONS[i] for i in rng.integers(0, len(ACTIONS), steps + 3)]
        seeds = [int(x) for x in rng.integers(0, 2**31, steps + 3)]
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            sid, home = _open(http)
            frames, served, fork = [], [], None
            for t in range(steps):
                if t == fork_at:
                    r = http.post(f"/v1/sessions/{sid}/fork")
                    if r.status_code != 201:
                        failures.append(f"client {k} fork: {r.status_code} {r.text}")
                        return
                    fork = (r.json()["session_id"], int(r.headers[REPLICA_HEADER]))
                r = _step(http, [sid], [acts[t]], [seeds[t]])
                if r.status_code != 200:
                    failures.append(f"client {k} step {t}: {r.status_code} {r.text}")
                    return
                served.append(int(r.headers[REPLICA_HEADER]))
                frames.append(_frame(r.json()["outputs"][0]))
            fork_frames, fork_served = [], []
            for t in range(fork_at, fork_at + 3):  # the fork continues from the state at fork_at
                r = _step(http, [fork[0]], [acts[steps + t - fork_at]], [seeds[steps + t - fork_at]])
                assert r.status_code == 200, r.text
                fork_served.append(int(r.headers[REPLICA_HEADER]))
                fork_frames.append(_frame(r.json()["outputs"][0]))
            for s in (sid, fork[0]):
                assert http.delete(f"/v1/sessions/{s}").status_code == 200
            results[k] = dict(sid=sid, home=home, served=served, frames=frames, acts=acts, seeds=seeds, fork=fork,
                              fork_served=fork_served, fork_frames=fork_frames)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a client did not finish within 120 s"
    assert not failures, failures
    assert len(results) == n
    assert {r["home"] for r in results.values()} == {0, 1}  # new sessions are spread over both replicas
    for k, r in results.items():
        addr = parse_address(r["sid"])
        assert addr is not None and addr[1] == r["home"]
        assert r["served"] == [r["home"]] * steps, f"client {k}: steps served by {r['served']}"
        fork_id, fork_home = r["fork"]
        assert fork_home == r["home"] and parse_address(fork_id)[1:] == addr[1:], "a fork stays on its replica"
        assert r["fork_served"] == [r["home"]] * 3
        # nothing lost or mixed: every frame is the one this client's own actions give
        want = _replay(r["acts"][:steps], r["seeds"][:steps])
        assert all(np.array_equal(a, b) for a, b in zip(r["frames"], want, strict=True)), f"client {k}"
        fork_want = _replay(r["acts"][:fork_at] + r["acts"][steps:], r["seeds"][:fork_at] + r["seeds"][steps:])
        assert all(np.array_equal(a, b) for a, b in zip(r["fork_frames"], fork_want[fork_at:], strict=True))


def _opened_on_both(http: httpx.Client, n: int = 4) -> list[tuple[str, int]]:
    opened = []
    for _ in range(n):  # new sessions alternate, whatever else is asked in between
        opened.append(_open(http))
        assert http.get("/v1/limits").status_code == 200
    homes = [home for _, home in opened]
    assert all(a != b for a, b in zip(homes, homes[1:])), homes
    return opened


def test_a_call_over_sessions_of_both_replicas_is_split_and_put_back_in_order(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        sids = [sid for sid, _ in _opened_on_both(http)]
        acts, seeds = [ACTIONS[i % len(ACTIONS)] for i in range(4)], [11, 12, 13, 14]
        # refused as a whole before anything runs: lists of another length, an unknown session
        r = _step(http, sids, acts[:3], seeds[:3])
        assert r.status_code == 422 and r.json()["error"]["code"] == "length_mismatch", r.text
        fake = "sess-r1.00000000.nope"  # a replica's address, an incarnation that never existed
        on0 = next(sid for sid in sids if parse_address(sid)[1] == 0)
        r = _step(http, [on0, fake], acts[:2], seeds[:2])  # split over both replicas
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_session" and fake in r.text
        r = _step(http, sids, acts, seeds)
        assert r.status_code == 200, r.text
        assert set(r.headers[REPLICA_HEADER].split(",")) == {"0", "1"}
        for out, a, s in zip(r.json()["outputs"], acts, seeds, strict=True):
            assert np.array_equal(_frame(out), _replay([a], [s])[0])  # each session stepped once
            assert out["frame_index"] == 1
        # a score over both replicas equals the sessions scored one by one
        q = {"question": "is the box red?", "answers": ["yes", "no"]}
        both = http.post("/v1/score", json={"session_ids": sids, **q})
        assert both.status_code == 200, both.text
        alone = [http.post("/v1/score", json={"session_ids": [s], **q}).json()["logprobs"][0] for s in sids]
        np.testing.assert_allclose(both.json()["logprobs"], alone)
        for sid in sids:
            assert http.delete(f"/v1/sessions/{sid}").status_code == 200


def test_episodes_playground_openapi_and_body_limit_through_the_router(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        r = http.post("/v1/envs/BagelNavigate-v0/episodes", json={"seed": 3})
        assert r.status_code == 201, r.text
        eid, home = r.json()["episode_id"], int(r.headers[REPLICA_HEADER])
        assert parse_address(eid)[1] == home
        for a in ACTIONS[:2]:
            r = http.post(f"/v1/episodes/{eid}/step", json={"action": a})
            assert r.status_code == 200 and int(r.headers[REPLICA_HEADER]) == home, r.text
        r = http.post(f"/v1/episodes/{eid}/fork")
        assert r.status_code == 201 and parse_address(r.json()["episode_id"])[1] == home
        child = r.json()["episode_id"]
        png = http.get(f"/v1/episodes/{eid}/frame", headers={"Accept": "image/png"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        gif = http.get(f"/v1/episodes/{eid}/gif")
        assert gif.status_code == 200 and gif.content[:3] == b"GIF"
        for e in (eid, child):
            assert http.delete(f"/v1/episodes/{e}").status_code == 200
        r = http.get(f"/v1/episodes/{eid}/frame")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_episode"
        assert http.get("/playground/").status_code == 200
        assert "/v1/sessions/step" in http.get("/openapi.json").json()["paths"]
        r = http.post("/v1/embed", content=b"x" * (MAX_BODY + 1), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_token_rules_and_remote_clients_work_unchanged(url, monkeypatch):
    import gymnasium as gym

    import bagel_world.envs  # noqa: F401  (registers the ids)
    from bagel_world.simulator.remote import RemoteSimulator

    assert httpx.get(f"{url}/v1/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    r = httpx.get(f"{url}/v1/tasks")
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
    sim = RemoteSimulator(url, token=TOKEN)
    sids = [sim.open(TASK, [START]) for _ in range(2)]  # round-robin: one on each replica
    assert {parse_address(s)[1] for s in sids} == {0, 1}
    child = sim.fork(sids[1])
    assert parse_address(child)[1:] == parse_address(sids[1])[1:]
    outs = sim.step([*sids, child], [ACTIONS[0], ACTIONS[1], ACTIONS[2]], [1, 2, 3])
    for out, a, seed in zip(outs, ACTIONS[:3], [1, 2, 3], strict=True):
        assert np.array_equal(out.frame, _replay([a], [seed])[0])
    for s in (*sids, child):
        sim.close(s)
    monkeypatch.setenv("BAGEL_WORLD_TOKEN", TOKEN)
    env = gym.make("BagelNavigate-v0", backend=url)
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            obs, *_ = env.step(ACTIONS[0])
        assert obs["frame"].shape == (*TEMPLATES[TASK].resolution, 3)
    finally:
        env.close()


def _kill_replica(index: int) -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#sim-{index}#"):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            return
    raise AssertionError(f"no replica actor of sim-{index}")


def test_a_killed_replica_loses_only_its_sessions(url):
    """Runs last in this module: it kills replica 1 (Serve starts a new one)."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        opened = [_open(http) for _ in range(6)]
        on0 = [sid for sid, home in opened if home == 0]
        on1 = [sid for sid, home in opened if home == 1]
        assert on0 and on1
        stop, lost0, steps0 = threading.Event(), [], [0]

        def keep_stepping() -> None:  # replica 0's clients go on while replica 1 dies
            with httpx.Client(base_url=url, headers=AUTH, timeout=60) as h:
                while not stop.is_set():
                    r = _step(h, on0, [ACTIONS[0]] * len(on0), list(range(len(on0))))
                    if r.status_code != 200 or r.headers[REPLICA_HEADER] != "0":
                        lost0.append(f"{r.status_code} {r.text[:200]}")
                    steps0[0] += 1

        th = threading.Thread(target=keep_stepping)
        th.start()
        try:
            _kill_replica(1)
            # replica 1's sessions: 503 while it is down, 410 once Serve has started a new one;
            # every answer names the session; then new sessions reach replica 1 again
            seen, deadline, back = set(), time.monotonic() + 60, False
            while time.monotonic() < deadline:
                r = _step(http, [on1[0]], [ACTIONS[0]], [0])
                assert r.status_code in (503, 410), r.text
                assert on1[0] in r.json()["error"]["message"]
                seen.add(r.status_code)
                sid, home = _open(http)  # new sessions always open, on a live replica
                assert _step(http, [sid], [ACTIONS[1]], [5]).status_code == 200
                if home == 1:
                    back = True
                    if 410 in seen:
                        break
                time.sleep(0.2)
            assert back and 410 in seen, f"replica 1 did not come back within 60 s (answers seen: {seen})"
            r = http.get(f"/v1/sessions/{on1[1] if len(on1) > 1 else on1[0]}/frame")
            assert r.status_code == 410 and r.json()["error"]["code"] == "session_lost"
        finally:
            stop.set()
            th.join(timeout=60)
        assert not lost0, lost0[:3]
        assert steps0[0] > 0
