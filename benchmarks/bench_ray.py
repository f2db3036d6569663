"""Throughput of the server on Ray Serve with 1 and 2 simulator replicas (fixed-cost fake model).

    python benchmarks/bench_ray.py                          # 16 clients, 200 ms per step call, batch <= 4
    python benchmarks/bench_ray.py --step-ms 20 --max-batch-size 8 --clients 32 --steps 20   # CPU-bound

Each replica serves the model-free fake simulator from tests/fakes.py, whose step call costs a
fixed time whatever its batch (a GPU below its memory limit), with at most `--max-batch-size`
sessions per call: one replica is saturated, so a second one can add throughput. N clients
each open a session and step it S times as fast as answers come back. The two settings are
run alternately (1 2 1 2 ...) on one local Ray instance and the table shows the median run;
the ratio is of steps per second. The router, Serve's proxy and the clients share this
machine's CPU, so on a small CPU they cap the gain below what separate GPUs would give.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fakes import TimedFakeFactory  # noqa: E402

from bagel_world.server import ServerSettings  # noqa: E402
from bagel_world.server.images import png_b64  # noqa: E402
from bagel_world.server.ray_serve import APP_NAME, REPLICA_HEADER, build_app  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="steps per client")
    p.add_argument("--step-ms", type=float, default=200.0, help="fixed cost of one step call of the fake")
    p.add_argument("--max-batch-size", type=int, default=4, help="sessions per step call (per replica)")
    p.add_argument("--repeat", type=int, default=2, help="runs per setting, interleaved")
    return p.parse_args()


def run_load(url: str, clients: int, steps: int) -> tuple[float, set[str]]:
    """(wall seconds for every client's steps once all sessions are open, replicas that served)."""
    tpl = default_templates(large=False)["navigate"]
    start = png_b64(np.zeros((*tpl.resolution, 3), np.uint8))
    barrier, errors, served = threading.Barrier(clients + 1), [], set()

    def client(k: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=300) as c:
                sid = c.post("/v1/sessions", json={"task": "navigate", "frames": [start]}).raise_for_status().json()[
                    "session_id"]
                barrier.wait()
                for t in range(steps):
                    r = c.post("/v1/sessions/step", json={"session_ids": [sid], "seeds": [t],
                                                          "actions": [tpl.canonical_actions[(k + t) % 3]]})
                    served.add(r.raise_for_status().headers[REPLICA_HEADER])
                c.delete(f"/v1/sessions/{sid}")
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for th in threads:
            th.join()
        raise errors[0] from None
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0, served


def main() -> None:
    import ray
    from ray import serve

    a = parse()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    settings = ServerSettings(max_batch_size=a.max_batch_size)
    runs: dict[int, list[float]] = {1: [], 2: []}
    try:
        for _ in range(a.repeat):
            for n in (1, 2):
                serve.run(build_app(TimedFakeFactory(a.step_ms), settings, replicas=n), name=APP_NAME, route_prefix="/")
                run_load(url, min(a.clients, 4), 2)  # warm-up: connections, first calls
                wall, served = run_load(url, a.clients, a.steps)
                assert len(served) == n, f"{n} replicas deployed, {sorted(served)} served"
                runs[n].append(a.clients * a.steps / wall)
                serve.delete(APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; fake step {a.step_ms:g} ms per "
          f"call, <= {a.max_batch_size} sessions per call; {a.clients} clients x {a.steps} steps; median of "
          f"{a.repeat} runs each, alternated\n")
    print("| replicas | steps/s (median) | runs |")
    print("|---|---|---|")
    for n in (1, 2):
        print(f"| {n} | {statistics.median(runs[n]):.1f} | {', '.join(f'{x:.1f}' for x in runs[n])} |")
    print(f"\n2 replicas / 1 replica: {statistics.median(runs[2]) / statistics.median(runs[1]):.2f}x steps/s")


if __name__ == "__main__":
    main()
