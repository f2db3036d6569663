"""Run the server on loopback in a background thread (tests, benchmarks, notebooks), and
drive it with many concurrent clients (the soak test and `benchmarks/soak_server.py`).

    with run_in_thread(create_app(sim)) as url:
        RemoteSimulator(url).tasks()
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


@contextmanager
def run_in_thread(app, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve `app` with uvicorn on `host` (a free port by default); yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here, so the port is known and cannot be taken meanwhile
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="bagel-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread exited during startup (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {startup_timeout_s} s")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@dataclass
class SoakClient:
    """One soak client: its task, start frame, and the actions and seeds it will send."""

    task: str
    start: np.ndarray
    actions: list[str]
    seeds: list[int]


@dataclass
class SoakResult:
    frames: dict[int, list[np.ndarray]]  # client index -> the frames it was answered, in order
    lost: int  # step requests with no 200 answer (error status, timeout, dropped connection)
    mixed: int  # answers whose frame_index is not the client's own next index
    errors: list[str]  # the first few failures, for the report
    wall_s: float  # from the moment every session is open until the last answer


def soak_clients(url: str, clients: list[SoakClient], token: str | None = None,
                 timeout_s: float = 600.0) -> SoakResult:
    """Run every client in its own thread against the server at `url`, each on its own session.

    The sessions are all opened first, then every client steps as fast as its answers come back
    and finally deletes its session. Nothing is retried: a failed request counts as lost.
    """
    import httpx

    from bagel_world.server.images import decode_png_b64, png_b64

    def decode(text: str) -> np.ndarray:
        return decode_png_b64(text, max_side=4096, max_pixels=4096 * 4096, what="frame")

    n = len(clients)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    barrier = threading.Barrier(n + 1)
    frames: dict[int, list[np.ndarray]] = {k: [] for k in range(n)}
    counts = {"lost": 0, "mixed": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def fail(kind: str, msg: str) -> None:
        with lock:
            counts[kind] += 1
            if len(errors) < 10:
                errors.append(msg)

    def run(k: int) -> None:
        cl = clients[k]
        with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as http:
            try:
                sid = http.post("/v1/sessions", json={"task": cl.task, "frames": [png_b64(cl.start)]}
                                ).raise_for_status().json()["session_id"]
            except Exception as exc:
                fail("lost", f"client {k}: open failed: {exc!r}")
                barrier.abort()
                return
            barrier.wait()
            base = None
            for t, (action, seed) in enumerate(zip(cl.actions, cl.seeds, strict=True)):
                try:
                    r = http.post("/v1/sessions/step", json={"session_ids": [sid], "actions": [action], "seeds": [seed]})
                    r.raise_for_status()
                    (out,) = r.json()["outputs"]
                except Exception as exc:
                    fail("lost", f"client {k} step {t}: {exc!r}")
                    continue
                base = out["frame_index"] - t if base is None else base
                if out["frame_index"] != base + t:
                    fail("mixed", f"client {k} step {t}: frame_index {out['frame_index']}, expected {base + t}")
                frames[k].append(decode(out["frame"]))
            http.delete(f"/v1/sessions/{sid}")

    threads = [threading.Thread(target=run, args=(k,), name=f"soak-{k}") for k in range(n)]
    for th in threads:
        th.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return SoakResult(frames, counts["lost"], counts["mixed"], errors, time.perf_counter() - t0)


def replay_diffs(sim, client: SoakClient, frames: list[np.ndarray]) -> list[int]:
    """Per step, the largest per-pixel difference (grey levels) between `frames` and the same
    client run alone, one step per call, directly on `sim`; [255] when the counts differ."""
    sid = sim.open(client.task, [client.start])
    try:
        want = [sim.step([sid], [a], [s])[0].frame for a, s in zip(client.actions, client.seeds, strict=True)]
    finally:
        sim.close(sid)
    if len(want) != len(frames):
        return [255]
    return [int(np.abs(w.astype(np.int16) - f.astype(np.int16)).max()) for w, f in zip(want, frames)]
