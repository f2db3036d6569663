"""The HTTP server with FastAPI's TestClient over FakeSimulator: API, limits, auth, errors."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fakes import FakeSimulator  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from bagel_world.server import ServerSettings, create_app, serve  # noqa: E402
from bagel_world.server.images import png_b64  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402

TEMPLATES = default_templates(large=False)


def frame(seed: int = 0, h: int = 64, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def client(sim=None, **settings) -> TestClient:
    app = create_app(sim if sim is not None else FakeSimulator(TEMPLATES), ServerSettings(**settings))
    return TestClient(app, base_url="http://127.0.0.1:8000")  # a loopback Host: no-token servers need one


def open_session(c: TestClient, seed: int = 0, task: str = "navigate", headers=None) -> str:
    r = c.post("/v1/sessions", json={"task": task, "frames": [png_b64(frame(seed))]}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def assert_error(r, status: int, code: str | None = None, contains: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) >= {"code", "message"}
    if code is not None:
        assert err["code"] == code, err
    if contains is not None:
        assert contains.lower() in err["message"].lower(), err
    return err


def png_with_header(width: int, height: int, depth: int = 8, colour: int = 2) -> str:
    """A PNG signature and IHDR claiming a size, with a tiny (bogus) body: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64).decode()


# ---- happy paths -------------------------------------------------------------------------
def test_health_tasks_and_metrics():
    with client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        tasks = c.get("/v1/tasks").json()["tasks"]
        assert set(tasks) == set(TEMPLATES)
        assert tuple(tasks["navigate"]["canonical_actions"]) == TEMPLATES["navigate"].canonical_actions
        m = c.get("/v1/metrics").json()
        for key in ("sessions", "queue_depth", "batches_run", "mean_batch_size", "step_latency_ms_p50",
                    "step_latency_ms_p95"):
            assert key in m


def test_session_roundtrip_matches_local_simulator():
    local = FakeSimulator(TEMPLATES)
    lid = local.open("navigate", [frame(1)])
    with client() as c:
        sid = open_session(c, seed=1)
        for i, action in enumerate(["move forward 0.5 m", "turn left 30 degrees", "zoom"]):
            r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": [action], "seeds": [i]})
            assert r.status_code == 200, r.text
            out = r.json()["outputs"][0]
            want = local.step([lid], [action], [i])[0]
            np.testing.assert_array_equal(decode(out["frame"]), want.frame)
            assert out["frame_index"] == want.frame_index == i + 1
        # Current frame as JSON and as raw PNG.
        j = c.get(f"/v1/sessions/{sid}/frame").json()
        np.testing.assert_array_equal(decode(j["frame"]), local.frame(lid))
        assert (j["height"], j["width"]) == (64, 64)
        raw = c.get(f"/v1/sessions/{sid}/frame", headers={"Accept": "image/png"})
        assert raw.headers["content-type"] == "image/png"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw.content))), local.frame(lid))
        # Fork: the copy evolves independently.
        fid = c.post(f"/v1/sessions/{sid}/fork").json()["session_id"]
        r = c.post("/v1/sessions/step", json={"session_ids": [fid, sid], "actions": ["a", "b"], "seeds": [5, 6]})
        lf = local.fork(lid)
        want = local.step([lf, lid], ["a", "b"], [5, 6])
        got = [decode(o["frame"]) for o in r.json()["outputs"]]
        np.testing.assert_array_equal(got[0], want[0].frame)
        np.testing.assert_array_equal(got[1], want[1].frame)
        # Embed and score.
        feats = np.asarray(c.post("/v1/embed", json={"frames": [png_b64(frame(3))]}).json()["features"], np.float32)
        np.testing.assert_array_equal(feats, local.embed([frame(3)]))
        lp = c.post("/v1/score", json={"session_ids": [sid], "question": "is it red?", "answers": ["yes", "no"]})
        np.testing.assert_allclose(lp.json()["logprobs"], local.score([lid], "is it red?", ["yes", "no"]), rtol=1e-6)
        # Close.
        assert c.delete(f"/v1/sessions/{sid}").json() == {"closed": sid}
        assert_error(c.get(f"/v1/sessions/{sid}/frame"), 404, "unknown_session")
        assert c.get("/v1/metrics").json()["sessions"] == 1


def test_grey_rgba_and_data_url_uploads_are_accepted_as_rgb():
    with client() as c:
        for mode in ("L", "RGBA", "P"):
            buf = io.BytesIO()
            Image.fromarray(frame(0)).convert(mode).save(buf, format="PNG")
            b64 = base64.b64encode(buf.getvalue()).decode()
            r = c.post("/v1/sessions", json={"task": "navigate", "frames": [b64]})
            assert r.status_code == 201, (mode, r.text)
        r = c.post("/v1/sessions", json={"task": "navigate", "frames": ["data:image/png;base64," + png_b64(frame(0))]})
        assert r.status_code == 201, r.text


# ---- bad input gets its 4xx --------------------------------------------------------------
def test_images_other_than_png_are_refused_naming_png():
    buf = io.BytesIO()
    Image.fromarray(frame(0)).save(buf, format="JPEG")
    jpeg = base64.b64encode(buf.getvalue()).decode()
    with client() as c:
        err = assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [jpeg]}), 422,
                           "unsupported_image_format")
        assert "JPEG" in err["message"] and "PNG" in err["message"]
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": ["data:image/jpeg;base64," + jpeg]}),
                     422, "unsupported_image_format")
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": ["not base64!"]}), 422, "invalid_image")
        junk = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100).decode()
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [junk]}), 422, "invalid_image")
        truncated = png_b64(frame(0))[:200]
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [truncated]}), 422)
        sixteen = png_with_header(64, 64, depth=16)
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [sixteen]}), 422,
                     "unsupported_image_format", "16-bit")


def test_decompression_bombs_are_refused_from_the_header():
    with client(max_image_side=512, max_image_pixels=128 * 128) as c:
        for w, h in [(100_000, 100_000), (600, 10), (10, 600), (200, 200)]:
            err = assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [png_with_header(w, h)]}),
                               413, "image_too_large")
            assert f"{w}x{h}" in err["message"]
        assert_error(c.post("/v1/embed", json={"frames": [png_with_header(0, 5)]}), 422, "invalid_image")
        # A real (all-zero, highly compressible) big image: refused before decoding.
        buf = io.BytesIO()
        Image.new("RGB", (4000, 4000)).save(buf, format="PNG")
        big = base64.b64encode(buf.getvalue()).decode()
        assert len(big) < 200_000
        assert_error(c.post("/v1/embed", json={"frames": [big]}), 413, "image_too_large")


def test_body_size_limit():
    with client(max_body_bytes=10_000) as c:
        body = {"task": "navigate", "frames": [png_b64(frame(0))]}  # ~16 kB of noise
        assert_error(c.post("/v1/sessions", json=body), 413, "body_too_large")

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"task": "navigate", "frames": ["'
            for _ in range(20):
                yield b"A" * 1000
            yield b'"]}'

        r = c.post("/v1/sessions", content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(r, 413, "body_too_large")


def test_step_input_errors():
    with client(max_action_length=32) as c:
        sid = open_session(c)

        def step(**kw):
            body = {"session_ids": [sid], "actions": ["move forward 0.5 m"], "seeds": [0]} | kw
            return c.post("/v1/sessions/step", json=body)

        assert_error(step(actions=["x" * 33]), 422, "action_too_long", "32")
        assert_error(step(actions=["   "]), 422, "invalid_action")
        assert_error(step(seeds=[-1]), 422, "invalid_request")
        assert_error(step(seeds=[2**64]), 422, "invalid_request")
        assert_error(step(seeds=["zero"]), 422, "invalid_request")
        assert_error(step(actions=["a", "b"]), 422, "length_mismatch")
        assert_error(step(session_ids=[sid, sid], actions=["a", "b"], seeds=[0, 1]), 422, "duplicate_session")
        assert_error(step(session_ids=[]), 422, "invalid_request")
        assert_error(step(extra=1), 422, "invalid_request", "extra")
        assert_error(step(session_ids=["sess-nope"]), 404, "unknown_session")
        r = c.post("/v1/sessions/step", content=b"{not json", headers={"Content-Type": "application/json"})
        assert_error(r, 422, "invalid_request")
        assert step().status_code == 200


def test_open_input_errors():
    with client(max_frames_per_request=2, max_text_length=10) as c:
        f = png_b64(frame(0))
        assert_error(c.post("/v1/sessions", json={"task": "fly", "frames": [f]}), 422, "unknown_task", "navigate")
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": []}), 422, "invalid_request")
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [f] * 3}), 422, "too_many_items")
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [f], "prompt": "x" * 11}), 422,
                     "text_too_long")
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": f}), 422, "invalid_request")
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [f], "path": "/etc/passwd"}), 422,
                     "invalid_request")
        assert_error(c.post("/v1/score", json={"session_ids": ["x"], "question": "q" * 11, "answers": ["a"]}), 422,
                     "text_too_long")


def test_unknown_routes_and_methods_are_structured():
    with client() as c:
        assert_error(c.get("/v1/nothing"), 404, "not_found")
        assert_error(c.put("/v1/sessions"), 405, "method_not_allowed")


# ---- sessions: limits, expiry ------------------------------------------------------------
def test_max_sessions_gives_429_and_frees_on_close():
    with client(max_sessions=2) as c:
        a = open_session(c)
        b = open_session(c)
        assert_error(c.post("/v1/sessions", json={"task": "navigate", "frames": [png_b64(frame(0))]}), 429,
                     "too_many_sessions", "maximum of 2")
        assert_error(c.post(f"/v1/sessions/{a}/fork"), 429, "too_many_sessions")
        c.delete(f"/v1/sessions/{b}")
        assert c.post(f"/v1/sessions/{a}/fork").status_code == 201


def test_idle_sessions_expire():
    sim = FakeSimulator(TEMPLATES)
    with client(sim, session_ttl_s=0.3) as c:
        sid = open_session(c)
        keep = open_session(c)
        for _ in range(4):  # use keeps a session alive
            time.sleep(0.1)
            assert c.get(f"/v1/sessions/{keep}/frame").status_code == 200
        time.sleep(0.3)
        err = assert_error(c.get(f"/v1/sessions/{sid}/frame"), 404, "session_expired", "expired")
        assert sid in err["message"]
        assert_error(c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["a"], "seeds": [0]}), 404,
                     "session_expired")
        # The sweeper closes idle sessions in the simulator too.
        time.sleep(0.5)
        assert len(sim._sessions) == 0
        assert_error(c.delete(f"/v1/sessions/{keep}"), 404, "session_expired")


# ---- auth --------------------------------------------------------------------------------
def test_token_required_when_configured():
    with client(token="s3cret") as c:
        assert c.get("/healthz").status_code == 200  # probes need no token
        assert_error(c.get("/v1/tasks"), 401, "unauthorized")
        assert_error(c.get("/v1/tasks", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(c.get("/v1/tasks", headers={"Authorization": "Basic s3cret"}), 401, "unauthorized")
        r = c.post("/v1/sessions", json={"task": "navigate", "frames": [png_b64(frame(0))]})
        assert_error(r, 401)
        assert c.get("/v1/tasks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        open_session(c, headers={"Authorization": "Bearer s3cret"})


def test_serve_refuses_non_loopback_without_token(monkeypatch):
    monkeypatch.delenv("BAGEL_WORLD_TOKEN", raising=False)
    for host in ("0.0.0.0", "192.168.1.5", "example.org", "::"):
        with pytest.raises(ValueError, match="token"):
            serve(checkpoint=None, host=host, port=1)


def test_settings_validate():
    with pytest.raises(ValueError, match="max_sessions"):
        ServerSettings(max_sessions=0)
    with pytest.raises(ValueError, match="token"):
        ServerSettings(token="  ")


# ---- failed model calls ------------------------------------------------------------------
class FlakySimulator(FakeSimulator):
    """Fails the step calls whose actions contain 'boom' or 'crash'."""

    def step(self, session_ids, actions, seeds):
        if any("boom" in a for a in actions):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if any("crash" in a for a in actions):
            raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
        return super().step(session_ids, actions, seeds)


def test_failed_model_call_fails_the_request_not_the_server():
    with client(FlakySimulator(TEMPLATES)) as c:
        sid = open_session(c)
        r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["boom"], "seeds": [0]})
        assert_error(r, 503, "out_of_memory", "out of memory")
        r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["crash"], "seeds": [0]})
        assert_error(r, 500, "model_error", "cudnn")
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": ["fine"], "seeds": [0]})
        assert r.status_code == 200 and r.json()["outputs"][0]["frame_index"] == 1
        assert c.get("/v1/metrics").json()["steps_failed"] == 2


def test_factory_is_called_once_at_startup():
    calls = []

    def factory():
        calls.append(1)
        return FakeSimulator(TEMPLATES)

    app = create_app(factory, ServerSettings())
    assert calls == []  # nothing loads at import or app creation
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        open_session(c)
        open_session(c)
    assert calls == [1]


def test_no_token_server_answers_only_on_loopback():
    app = create_app(FakeSimulator(TEMPLATES), ServerSettings())
    with TestClient(app, base_url="http://192.168.1.20:8000") as c:  # a request that came in on a LAN address
        assert_error(c.get("/v1/tasks"), 401, "token_required", "--token")
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/v1/tasks").status_code == 200
