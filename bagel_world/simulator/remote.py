"""`RemoteSimulator`: the simulator API over HTTP, against `bagel-world serve`.

Frames travel as lossless PNG and seeds as integers, so a remote session produces
exactly the frames a local one would for the same seeds and actions. Errors from the
server come back as the exceptions the local simulator raises:

    401/403 -> PermissionError      404 -> KeyError (unknown or expired session)
    other 4xx -> ValueError         429, 5xx -> RuntimeError
    server unreachable -> ConnectionError
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bagel_world.simulator.base import SamplingSettings, Simulator, StepOutput, TaskTemplate
from bagel_world.simulator.codec import decode_png, png_b64
from bagel_world.simulator.scenarios import ScenarioSet


def template_from_json(d: dict[str, Any]) -> TaskTemplate:
    """Inverse of `tasks.template_to_json`."""
    d = dict(d)
    s = dict(d.pop("sampling"))
    s["cfg_interval"] = tuple(s["cfg_interval"])
    d["canonical_actions"] = tuple(d.get("canonical_actions", ()))
    d["resolution"] = tuple(d["resolution"])
    return TaskTemplate(**d, sampling=SamplingSettings(**s))


class RemoteSimulator(Simulator):
    """A `Simulator` served by a bagel-world server at `url` (e.g. "http://127.0.0.1:8000").

    `token` defaults to the BAGEL_WORLD_TOKEN environment variable. `timeout` is per
    request in seconds; a step on a busy GPU server may wait for its batch, so keep it generous.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0):
        import httpx

        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s):// URL of a bagel-world server, got {url!r}")
        self.url = str(url).rstrip("/")
        token = token if token is not None else os.environ.get("BAGEL_WORLD_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._httpx = httpx
        self._tasks: dict[str, TaskTemplate] | None = None
        self._opened: set[str] = set()  # sessions this client holds, for close_all
        self._limits: dict | None = None

    # ---- transport -----------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except self._httpx.TransportError as exc:
            raise ConnectionError(f"cannot reach the bagel-world server at {self.url}: {exc}") from exc
        if r.status_code < 400:
            return r
        try:
            err = r.json()["error"]
            code, message = err["code"], err["message"]
        except Exception:  # not our server, or a proxy page
            code, message = "http_error", r.text[:300]
        text = f"{self.url}{path}: {r.status_code} {code}: {message}"
        if r.status_code in (401, 403):
            raise PermissionError(text)
        if r.status_code == 404:
            raise KeyError(text)
        if r.status_code == 429 or r.status_code >= 500:
            raise RuntimeError(text)
        raise ValueError(text)

    def _json(self, method: str, path: str, **kw) -> Any:
        return self._request(method, path, **kw).json()

    def disconnect(self) -> None:
        """Close the HTTP connection pool (sessions stay open on the server)."""
        self._http.close()

    def __enter__(self) -> RemoteSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close_all()
        self.disconnect()

    def shipped_scenarios(self, task: str) -> ScenarioSet | None:
        """The server checkpoint's scenario set for `task`, or None (`scenarios` keeps it).

        Mirroring the server's sets makes a remote env reset to the same frames as a local
        one for the same seed.
        """
        try:
            data = self._request("GET", f"/v1/tasks/{task}/scenarios").content
        except KeyError:  # none for this task: both sides use the same procedural scenes
            return None
        return ScenarioSet.load(io.BytesIO(data))

    def health(self) -> dict:
        return self._json("GET", "/healthz")

    def metrics(self) -> dict:
        return self._json("GET", "/v1/metrics")

    # ---- Simulator API -------------------------------------------------------------------
    def tasks(self) -> dict[str, TaskTemplate]:
        if self._tasks is None:
            raw = self._json("GET", "/v1/tasks")["tasks"]
            self._tasks = {name: template_from_json(t) for name, t in raw.items()}
        return dict(self._tasks)

    def open(self, task: str, frames: Sequence[np.ndarray], prompt: str | None = None) -> str:
        body = {"task": task, "frames": [png_b64(f) for f in frames], "prompt": prompt}
        sid = self._json("POST", "/v1/sessions", json=body)["session_id"]
        self._opened.add(sid)
        return sid

    def step(self, session_ids: Sequence[str], actions: Sequence[str], seeds: Sequence[int]) -> list[StepOutput]:
        if len(session_ids) == 0 and len(actions) == 0 and len(seeds) == 0:
            return []
        body = {"session_ids": list(session_ids), "actions": list(actions), "seeds": [int(s) for s in seeds]}
        outs = self._json("POST", "/v1/sessions/step", json=body)["outputs"]
        return [
            StepOutput(frame=decode_png(base64.b64decode(o["frame"])), text=o["text"],
                       latency_s=float(o["latency_s"]), frame_index=int(o["frame_index"]))
            for o in outs
        ]

    def fork(self, session_id: str) -> str:
        sid = self._json("POST", f"/v1/sessions/{session_id}/fork")["session_id"]
        self._opened.add(sid)
        return sid

    def close(self, session_id: str) -> None:
        self._opened.discard(session_id)
        self._request("DELETE", f"/v1/sessions/{session_id}")

    def close_all(self) -> None:
        for sid in list(self._opened):
            try:
                self.close(sid)
            except (KeyError, ConnectionError, RuntimeError):
                pass  # already gone (expired) or the server is down: nothing to free

    def frame(self, session_id: str) -> np.ndarray:
        r = self._request("GET", f"/v1/sessions/{session_id}/frame", headers={"Accept": "image/png"})
        return decode_png(r.content)

    def limits(self) -> dict:
        """The server's request limits (fetched once)."""
        if self._limits is None:
            self._limits = self._json("GET", "/v1/limits")
        return self._limits

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        if len(frames) == 0:
            raise ValueError("embed needs at least one frame")
        # Split into requests within the server's frame-count and body-size limits.
        lim = self.limits()
        max_n, max_bytes = int(lim["max_frames_per_request"]), int(lim["max_body_bytes"]) * 9 // 10
        encoded = [png_b64(f) for f in frames]
        chunks: list[list[str]] = [[]]
        size = 0
        for e in encoded:
            if chunks[-1] and (len(chunks[-1]) >= max_n or size + len(e) + 4 > max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(e)
            size += len(e) + 4
        feats = [self._json("POST", "/v1/embed", json={"frames": c})["features"] for c in chunks]
        return np.asarray([row for part in feats for row in part], dtype=np.float32)

    def score(self, session_ids: Sequence[str], question: str, answers: Sequence[str],
              goals: Sequence[np.ndarray] | None = None) -> np.ndarray:
        if len(session_ids) == 0:
            return np.zeros((0, len(answers)), np.float32)
        body = {"session_ids": list(session_ids), "question": question, "answers": list(answers)}
        if goals is not None:
            body["goals"] = [png_b64(np.asarray(g, np.uint8)) for g in goals]
        return np.asarray(self._json("POST", "/v1/score", json=body)["logprobs"], dtype=np.float32)

    def ask(self, images: Sequence[np.ndarray], question: str, answers: Sequence[str], *,
            captions: Sequence[str] | None = None, think: bool = False, max_think_tokens: int = 256,
            length_normalize: bool = False, seed: int = 0) -> tuple[np.ndarray, str | None]:
        body = {"images": [png_b64(im) for im in images], "question": question,
                "answers": list(answers), "captions": None if captions is None else list(captions),
                "think": bool(think), "max_think_tokens": int(max_think_tokens),
                "length_normalize": bool(length_normalize), "seed": int(seed)}
        out = self._json("POST", "/v1/ask", json=body)
        return np.asarray(out["logprobs"], dtype=np.float64), out["thought"]

    def __repr__(self) -> str:
        return f"RemoteSimulator({self.url!r})"
