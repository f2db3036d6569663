"""Issue 12: one client can never hurt another, and every bad input gets a clear error.

Each test fails on the server as it was before the fix; races are run concurrently on a
real uvicorn (`run_in_thread`), with a simulator that holds a step until the test lets it go.
"""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
from fakes import FakeSimulator  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_server import assert_error, frame, png_with_header  # noqa: E402

import bagel_world.envs  # noqa: E402,F401  (registers the ids)
from bagel_world.server import ServerSettings, create_app  # noqa: E402
from bagel_world.server.images import png_b64  # noqa: E402
from bagel_world.server.testing import run_in_thread  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402

TEMPLATES = default_templates(large=False)
LOOPBACK = "http://127.0.0.1:8000"


def client(sim=None, **settings) -> TestClient:
    app = create_app(sim if sim is not None else FakeSimulator(TEMPLATES), ServerSettings(**settings))
    return TestClient(app, base_url=LOOPBACK)


def post_raw(c, url: str, body: dict):
    """POST `body` as JSON with every non-ASCII character escaped, lone surrogates included."""
    return c.post(url, content=json.dumps(body, ensure_ascii=True), headers={"Content-Type": "application/json"})


def open_session(c, seed: int = 0) -> str:
    r = c.post("/v1/sessions", json={"task": "navigate", "frames": [png_b64(frame(seed))]})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def new_episode(c, env_id: str = "BagelMultiview-v0") -> str:
    r = c.post(f"/v1/envs/{env_id}/episodes", json={"seed": 0})
    assert r.status_code == 201, r.text
    return r.json()["episode_id"]


def run_threads(*fns) -> list:
    """Run each fn on its own thread; their results (or exceptions) in order."""
    out: list = [None] * len(fns)

    def run(i, fn):
        try:
            out[i] = fn()
        except BaseException as exc:  # surfaced by the caller's asserts
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


# ---- defect 1: one rule per text field, at the boundary ----------------------------------
BAD_TEXT = {"NUL": "a\x00b", "ESC": "a\x1b[31m", "DEL": "a\x7f", "zero-width space": "a\u200bb",
            "bidi override": "a\u202eb", "lone surrogate": "a\ud800b", "non-ASCII": "caf\u00e9"}


@pytest.mark.parametrize("name", sorted(BAD_TEXT))
def test_every_text_field_refuses_the_same_characters_on_sessions_and_episodes(name):
    bad = BAD_TEXT[name]
    with client() as c:
        sid, eid = open_session(c), new_episode(c)
        f = png_b64(frame(0))
        cases = [
            ("/v1/sessions/step", {"session_ids": [sid], "actions": [bad], "seeds": [0]}, "actions[0]"),
            (f"/v1/episodes/{eid}/step", {"action": bad}, "action"),
            ("/v1/sessions", {"task": "navigate", "frames": [f], "prompt": bad}, "prompt"),
            ("/v1/envs/BagelNavigate-v0/episodes", {"options": {"instruction": bad}}, "options.instruction"),
            ("/v1/envs/BagelFutureFrame-v0/episodes", {"options": {"question": bad}}, "options.question"),
            ("/v1/score", {"session_ids": [sid], "question": bad, "answers": ["yes"]}, "question"),
            ("/v1/score", {"session_ids": [sid], "question": "red?", "answers": ["yes", bad]}, "answers[1]"),
        ]
        for url, body, field in cases:
            err = assert_error(post_raw(c, url, body), 422, "invalid_input", "printable ASCII")
            assert err["message"].startswith(field + " "), (url, err)
            assert "U+" in err["message"], err  # the refused character, named by its code point
        # Nothing refused reached the model: both are still at their first frame.
        r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["wait"], "seeds": [0]})
        assert r.json()["outputs"][0]["frame_index"] == 1
        assert c.post(f"/v1/episodes/{eid}/step", json={"action": 0}).json()["step"] == 1


def test_the_text_rule_is_in_the_openapi_schema():
    with client() as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
    action = schemas["StepSessions"]["properties"]["actions"]["items"]
    question = schemas["ScoreRequest"]["properties"]["question"]
    for field in (action, question):
        # The schema's pattern is the handlers' rule: a generated client refuses what they refuse.
        rule = re.compile(field["pattern"])
        assert "printable ASCII" in field["description"]
        for ok in ("move forward 0.5 m", " x ", "~"):
            assert rule.match(ok), ok
        for bad in ("", "   ", "a\x00", "caf\u00e9", "a\u200bb", "\x7f"):
            assert not rule.match(bad), repr(bad)


def test_the_schema_states_task_names_base64_and_unreadable_bodies():
    with client() as c:
        doc = c.get("/openapi.json").json()
        r = c.post("/v1/sessions", content=b"\xef\xbf", headers={"Content-Type": "application/json"})
    assert doc["components"]["schemas"]["OpenSession"]["properties"]["task"]["enum"] == sorted(TEMPLATES)
    png = doc["components"]["schemas"]["OpenSession"]["properties"]["frames"]["items"]
    assert png["contentMediaType"] == "image/png" and png["contentEncoding"] == "base64"
    rule = re.compile(png["pattern"])
    assert rule.match(png_b64(frame(0))) and rule.match("data:image/png;base64," + png_b64(frame(0)))
    assert not rule.match("0") and not rule.match("0=") and not rule.match("abc$")
    # A body that is not readable JSON is a documented status of every route.
    assert r.status_code in (400, 422) and str(r.status_code) in doc["paths"]["/v1/sessions"]["post"]["responses"]


class RecordingSimulator(FakeSimulator):
    """Records the actions of every step call; 'poison' fails the whole call, like a tokenizer error."""

    def __init__(self, templates):
        super().__init__(templates)
        self.calls: list[list[str]] = []

    def step(self, session_ids, actions, seeds):
        self.calls.append(list(actions))
        if "poison" in actions:
            raise ValueError("the tokenizer cannot encode action 'poison'")
        return super().step(session_ids, actions, seeds)


def _concurrent_steps(url: str, actions: list[str], raw: bool = False) -> list[httpx.Response]:
    """Open one session per action, then step them all at once (so they share a batch)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        sids = [open_session(c, seed=k) for k in range(len(actions))]
    barrier = threading.Barrier(len(actions))

    def step(sid, action):
        body = json.dumps({"session_ids": [sid], "actions": [action], "seeds": [0]}, ensure_ascii=True)
        with httpx.Client(base_url=url, timeout=30) as c:
            barrier.wait()
            return c.post("/v1/sessions/step", content=body, headers={"Content-Type": "application/json"})

    return run_threads(*[lambda s=s, a=a: step(s, a) for s, a in zip(sids, actions)])


def test_a_failed_batch_fails_only_the_request_that_caused_it():
    sim = RecordingSimulator(TEMPLATES)
    with run_in_thread(create_app(sim, ServerSettings(max_batch_wait_ms=300))) as url:
        bad, good, good2 = _concurrent_steps(url, ["poison", "move forward 0.5 m", "turn left 30 degrees"])
        metrics = httpx.get(url + "/v1/metrics").json()
    assert any(len(call) == 3 for call in sim.calls), sim.calls  # they did share a batch
    assert_error(bad, 422, "invalid_input", "poison")
    for r in (good, good2):
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["frame_index"] == 1  # advanced exactly once
    assert metrics["steps_failed"] == 1


class GroupedSimulator(RecordingSimulator):
    """Steps task groups one after another, as LocalSimulator does: a group can commit
    before another group's failure."""

    def __init__(self, templates):
        super().__init__(templates)
        self.call_tasks: list[set[str]] = []  # the tasks of each call the server made

    def step(self, session_ids, actions, seeds):
        tasks = {self._sessions[sid]["task"] for sid in session_ids}
        self.call_tasks.append(tasks)
        out = {}
        for task in sorted(tasks):
            idx = [i for i, sid in enumerate(session_ids) if self._sessions[sid]["task"] == task]
            outs = super().step([session_ids[i] for i in idx], [actions[i] for i in idx], [seeds[i] for i in idx])
            out.update(zip(idx, outs))
        return [out[i] for i in range(len(session_ids))]


def test_a_failed_batch_of_several_tasks_never_steps_a_session_twice():
    sim = GroupedSimulator(TEMPLATES)
    mv = png_b64(frame(9, *TEMPLATES["multiview"].resolution))
    with run_in_thread(create_app(sim, ServerSettings(max_batch_wait_ms=300))) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            nav = open_session(c)
            r = c.post("/v1/sessions", json={"task": "multiview", "frames": [mv]})
            multi = r.json()["session_id"]
        barrier = threading.Barrier(2)

        def step(sid, action):
            with httpx.Client(base_url=url, timeout=30) as c:
                barrier.wait()
                return c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": [action], "seeds": [0]})

        good, bad = run_threads(lambda: step(nav, "wait"), lambda: step(multi, "poison"))
    assert_error(bad, 422, "invalid_input", "poison")
    assert good.status_code == 200 and good.json()["outputs"][0]["frame_index"] == 1, good.text
    assert all(len(tasks) == 1 for tasks in sim.call_tasks), sim.call_tasks
    assert sim.calls.count(["wait"]) == 1 and ["poison"] in sim.calls


def test_a_lone_surrogate_in_one_step_does_not_fail_a_concurrent_innocent_step():
    sim = RecordingSimulator(TEMPLATES)
    with run_in_thread(create_app(sim, ServerSettings(max_batch_wait_ms=300))) as url:
        bad, good = _concurrent_steps(url, ["\ud800", "move forward 0.5 m"])
    err = assert_error(bad, 422, "invalid_input", "actions[0]")
    assert "U+D800" in err["message"]
    assert good.status_code == 200, good.text
    assert good.json()["outputs"][0]["frame_index"] == 1


# ---- defect 8: error bodies echo bounded ids and never an object repr --------------------
def test_error_bodies_cap_echoed_ids_and_leak_no_reprs():
    long_id = "x" * 20_000
    with client() as c:
        for r in (c.get(f"/v1/sessions/{long_id}/frame"), c.post(f"/v1/episodes/{long_id}/step", json={"action": 0}),
                  c.post(f"/v1/envs/{long_id}/episodes", json={}), c.get(f"/v1/tasks/{long_id}/scenarios")):
            err = assert_error(r, 404)
            assert len(err["message"]) < 400 and "x" * 64 + "'…" in err["message"], err
        # A PNG header with a bogus body: PIL's message names its buffer by repr.
        err = assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [png_with_header(64, 64)]}),
                           422, "invalid_image")
        assert "frames[0]" in err["message"] and "object at 0x" not in err["message"], err
        r = c.post("/v1/sessions/step", content=json.dumps({"x" * 5000: 1}), headers={"Content-Type": "application/json"})
        assert len(r.text) < 2000, r.text


# ---- defect 2: a request queued behind a DELETE finds the episode gone -------------------
class GatedSimulator(FakeSimulator):
    """A step whose actions include 'slow' waits until the test opens the gate."""

    def __init__(self, templates):
        super().__init__(templates)
        self.entered, self.gate = threading.Event(), threading.Event()

    def step(self, session_ids, actions, seeds):
        if "slow" in actions:
            self.entered.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return super().step(session_ids, actions, seeds)


def _wait_for_waiters(lock, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(getattr(lock, "_waiters", None) or ()) < n:  # asyncio.Lock's queue of waiting requests
        assert time.monotonic() < deadline, f"{n} requests never queued on the episode's lock"
        time.sleep(0.01)


@pytest.mark.parametrize("late", ["fork", "step", "delete"])
def test_a_request_queued_behind_a_close_gets_404_not_a_dead_episode(late):
    sim = GatedSimulator(TEMPLATES)
    app = create_app(sim)
    with run_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        eid = new_episode(c)
        lock = app.state.server.episodes[eid].lock
        late_call = {"fork": lambda: c.post(f"/v1/episodes/{eid}/fork"),
                     "step": lambda: c.post(f"/v1/episodes/{eid}/step", json={"action": 0}),
                     "delete": lambda: c.delete(f"/v1/episodes/{eid}")}[late]
        results: dict = {}

        def in_order():
            # 1. A step holds the episode's lock inside the model; 2. a DELETE queues on it;
            # 3. then the late request queues behind the DELETE; 4. the step finishes.
            t_step = threading.Thread(target=lambda: results.update(step=c.post(f"/v1/episodes/{eid}/step",
                                                                              json={"action": "slow"})))
            t_step.start()
            assert sim.entered.wait(10)
            t_del = threading.Thread(target=lambda: results.update(closed=c.delete(f"/v1/episodes/{eid}")))
            t_del.start()
            _wait_for_waiters(lock, 1)
            t_late = threading.Thread(target=lambda: results.update(late=late_call()))
            t_late.start()
            _wait_for_waiters(lock, 2)
            sim.gate.set()
            for t in (t_step, t_del, t_late):
                t.join(30)

        in_order()
        step, closed, late_r = results["step"], results["closed"], results["late"]
        assert step.status_code == 200 and closed.status_code == 200, (step.text, closed.text)
        assert_error(late_r, 404, "unknown_episode", "closed")
        assert app.state.server.episodes == {}  # nothing was forked from the closed episode


# ---- defect 6: only the documented types ------------------------------------------------
def test_booleans_and_strings_are_not_coerced_into_indices_or_seeds():
    with client() as c:
        sid, eid = open_session(c), new_episode(c)
        for action in (True, False, 1.0):
            assert_error(c.post(f"/v1/episodes/{eid}/step", json={"action": action}), 422, "invalid_request")
        for seed in (True, "5", 5.0):
            r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["wait"], "seeds": [seed]})
            assert_error(r, 422, "invalid_request", "seeds.0")
            assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json={"seed": seed}), 422, "invalid_request")
        for index in (True, "1"):
            body = {"options": {"scene_index": index}}
            assert_error(c.post("/v1/envs/BagelMultiview-v0/episodes", json=body), 422, "invalid_request")
        for bad in ({"task": 1}, {"prompt": 5}, {"frames": [True]}):
            body = {"task": "navigate", "frames": [png_b64(frame(0))]} | bad
            assert_error(c.post("/v1/sessions", json=body), 422, "invalid_request")
        # The documented types still work, "5" included as an action text.
        assert c.post(f"/v1/episodes/{eid}/step", json={"action": 1}).status_code == 200
        assert c.post(f"/v1/episodes/{eid}/step", json={"action": "5"}).status_code == 200
        r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["wait"], "seeds": [5]})
        assert r.status_code == 200


# ---- defect 4: one client cannot take every slot -----------------------------------------
def _client_at(url: str, address: str) -> httpx.Client:
    """An HTTP client whose requests come from `address` (any 127.x address is loopback on Linux)."""
    return httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def test_a_client_over_its_quota_gets_429_with_retry_after_and_others_still_get_slots():
    app = create_app(FakeSimulator(TEMPLATES), ServerSettings(max_sessions=10, max_sessions_per_client=3,
                                                             session_ttl_s=60))
    with run_in_thread(app) as url, _client_at(url, "127.0.0.1") as hog, _client_at(url, "127.0.0.2") as other:
        # The hog asks for twice its quota at once: exactly its quota is granted.
        got = run_threads(*[lambda: hog.post("/v1/sessions", json={"task": "navigate",
                                                                    "frames": [png_b64(frame(0))]})] * 6)
        assert sorted(r.status_code for r in got) == [201] * 3 + [429] * 3
        sid = next(r.json()["session_id"] for r in got if r.status_code == 201)
        for r in (got[[g.status_code for g in got].index(429)], hog.post(f"/v1/sessions/{sid}/fork"),
                  hog.post("/v1/envs/BagelMultiview-v0/episodes", json={})):
            err = assert_error(r, 429, "client_quota_exceeded", "quota of 3")
            assert 1 <= int(r.headers["Retry-After"]) <= 60, r.headers
            assert "Retry-After" in r.headers and "retry in" in err["message"]
        # Another client is not affected, and the hog gets a slot back by closing one.
        for _ in range(3):
            assert other.post("/v1/envs/BagelMultiview-v0/episodes", json={}).status_code == 201
        assert hog.delete(f"/v1/sessions/{sid}").status_code == 200
        assert hog.post("/v1/envs/BagelMultiview-v0/episodes", json={}).status_code == 201
        assert hog.get("/v1/limits").json()["max_sessions_per_client"] == 3


def test_the_default_quota_is_half_the_server_on_a_token_server_and_none_on_loopback():
    assert ServerSettings(token="t").client_quota == 128
    assert ServerSettings(token="t", max_sessions=10, max_sessions_per_client=7).client_quota == 7
    assert ServerSettings().client_quota is None  # loopback only: all clients share one address
    with client(token="t", max_sessions=4) as c:
        auth = {"Authorization": "Bearer t"}
        assert c.get("/v1/limits", headers=auth).json()["max_sessions_per_client"] == 2
        for expected in (201, 201, 429):
            r = c.post("/v1/envs/BagelMultiview-v0/episodes", json={}, headers=auth)
            assert r.status_code == expected, r.text


# ---- defect 3: DNS rebinding: without a token, only loopback Host names -----------------
def test_a_server_without_token_answers_only_loopback_host_names():
    app = create_app(FakeSimulator(TEMPLATES), ServerSettings(allowed_hosts=("My-Box.lan",)))
    with run_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        for host in ("localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000", "[::1]", "my-box.lan:8000"):
            assert c.get("/v1/tasks", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", "[::2]:80"):
            err = assert_error(c.get("/v1/tasks", headers={"Host": host}), 421, "host_not_allowed", "localhost")
            assert "--token" in err["message"], err
        r = c.post("/v1/sessions", json={"task": "navigate", "frames": [png_b64(frame(0))]},
                   headers={"Host": "rebound.example"})
        assert_error(r, 421, "host_not_allowed")
        assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 200  # probes: no API behind it
    with run_in_thread(create_app(FakeSimulator(TEMPLATES), ServerSettings(token="t"))) as url:
        r = httpx.get(url + "/v1/tasks", headers={"Host": "api.example", "Authorization": "Bearer t"})
        assert r.status_code == 200  # a token server is reached by any name; the token guards it


# ---- defect 5: a stalled body is cut off ----------------------------------------------------
def test_a_stalled_request_body_gets_408_and_its_connection_closed():
    import socket

    app = create_app(FakeSimulator(TEMPLATES), ServerSettings(body_timeout_s=0.5))
    with run_in_thread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        socks = []
        t0 = time.monotonic()
        for _ in range(5):  # several at once: each is cut off on its own clock
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"task\": ")  # ...and then nothing more
            socks.append(s)
        for s in socks:
            data = b""
            while chunk := s.recv(4096):  # until the server closes the connection
                data += chunk
            s.close()
            assert data.startswith(b"HTTP/1.1 408"), data[:200]
            assert b"request_timeout" in data and b"0.5 s" in data
        assert time.monotonic() - t0 < 5
        assert httpx.get(url + "/v1/tasks").status_code == 200  # the server goes on


# ---- defect 7: the OpenAPI document states every error status --------------------------
def test_openapi_documents_the_error_statuses_of_every_route():
    with client() as c:
        doc = c.get("/openapi.json").json()
    assert set(doc["components"]["schemas"]["ErrorDetail"]["required"]) == {"code", "message"}
    want_extra = {("post", "/v1/sessions"): {"429"}, ("post", "/v1/sessions/{session_id}/fork"): {"404", "429"},
                  ("post", "/v1/envs/{env_id}/episodes"): {"404", "429"},
                  ("post", "/v1/episodes/{episode_id}/step"): {"404", "409"},
                  ("post", "/v1/episodes/{episode_id}/fork"): {"404", "429"},
                  ("post", "/v1/sessions/step"): {"404"}, ("post", "/v1/score"): {"404"}}
    routes = [(m, path, op) for path, ops in doc["paths"].items() if path.startswith("/v1/") for m, op in ops.items()]
    assert len(routes) == 19  # POST /v1/ask included
    for method, path, op in routes:
        documented = set(op["responses"])
        expected = {"401", "408", "413", "421", "422", "500", "503"} | want_extra.get((method, path), set())
        if "{" in path:
            expected.add("404")
        assert expected <= documented, (method, path, sorted(expected - documented))
        ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody"), (method, path, ref)
