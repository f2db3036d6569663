"""Load and soak: 64 concurrent clients x 100 steps, four tasks mixed, served twice.

The model-free fake keeps this inside CI's budget; `benchmarks/soak_server.py` runs the same
load on the shipped model and prints the figures quoted in the README.
"""

from __future__ import annotations

import gc
import tracemalloc

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fakes import FakeSimulator  # noqa: E402
from test_server import frame  # noqa: E402

from bagel_world.server import ServerSettings, create_app  # noqa: E402
from bagel_world.server.testing import SoakClient, replay_diffs, run_in_thread, soak_clients  # noqa: E402
from bagel_world.simulator.tasks import TASK_NAMES, default_templates  # noqa: E402

TEMPLATES = default_templates(large=False)


def soak_plan(n_clients: int, n_steps: int, run: int) -> list[SoakClient]:
    """Client k drives task k mod 4 through its canonical actions; seeds differ per run."""
    plan = []
    for k in range(n_clients):
        task = TASK_NAMES[k % len(TASK_NAMES)]
        acts = TEMPLATES[task].canonical_actions
        plan.append(SoakClient(task, frame(1000 * run + k), [acts[(k + t) % len(acts)] for t in range(n_steps)],
                               [run * 10**6 + k * 1000 + t for t in range(n_steps)]))
    return plan


@pytest.mark.slow
def test_64_clients_x_100_steps_nothing_lost_or_mixed_and_memory_bounded():
    n_clients, n_steps = 64, 100
    sim = FakeSimulator(TEMPLATES)
    app = create_app(sim, ServerSettings(max_batch_size=64, max_batch_wait_ms=2))
    held = []
    tracemalloc.start()
    try:
        with run_in_thread(app) as url:
            for run in range(2):
                plan = soak_plan(n_clients, n_steps, run)
                res = soak_clients(url, plan, timeout_s=120)
                assert res.lost == 0 and res.mixed == 0, res.errors
                assert [len(res.frames[k]) for k in range(n_clients)] == [n_steps] * n_clients
                # Every client's frames are exactly its own run alone (the fake is exact; a model is
                # equal up to one grey level, see benchmarks/soak_server.py).
                replay = FakeSimulator(TEMPLATES)
                for k in range(n_clients):
                    assert max(replay_diffs(replay, plan[k], res.frames[k])) == 0, f"run {run} client {k}"
                m = httpx.get(url + "/v1/metrics").json()
                assert m["sessions"] == 0 and m["queue_depth"] == 0, m
                assert m["steps_failed"] == 0
                assert m["steps_run"] == (run + 1) * n_clients * n_steps
                del res, plan, replay
                gc.collect()
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # Closed sessions give their memory back: after the second run the process holds no more than
    # after the first, give or take far less than a run's worth of frames (64 x 100 x 12 KiB =
    # 75 MiB). This counts what Python and numpy hold (numpy reports its buffers to tracemalloc);
    # RSS is not used because glibc keeps freed arenas mapped, so it drifts by tens of MiB.
    assert held[1] - held[0] < 4 * 2**20, [h / 2**20 for h in held]
    assert len(sim._sessions) == 0
