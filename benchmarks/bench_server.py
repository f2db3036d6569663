"""Throughput of the HTTP server on loopback: dynamic batching vs one request at a time.

    python benchmarks/bench_server.py                    # the default model (make_simulator())
    python benchmarks/bench_server.py --checkpoint PATH --device cuda
    python benchmarks/bench_server.py --fake --fake-step-ms 20   # no model: a fixed-cost fake step

N client threads each open a session and step it S times as fast as answers come back.
The same simulator is served twice: with `max_batch_size=1` (every request its own model
call) and with `max_batch_size=N` (concurrent requests gathered into one call). Prints a
markdown table; the gain is the ratio of steps per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bagel_world.server import ServerSettings, create_app
from bagel_world.server.images import png_b64
from bagel_world.server.testing import run_in_thread
from bagel_world.simulator.scenarios import procedural_scenarios


@dataclass
class Args:
    checkpoint: str | None
    device: str | None
    fake: bool
    fake_step_ms: float
    clients: int
    steps: int
    task: str
    wait_ms: float
    repeat: int
    torch_threads: int | None


def parse() -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint folder or repo (default: make_simulator()'s)")
    p.add_argument("--device", default=None, help="e.g. cuda, cpu")
    p.add_argument("--fake", action="store_true", help="serve the model-free FakeSimulator from tests/fakes.py")
    p.add_argument("--fake-step-ms", type=float, default=20.0,
                   help="with --fake: fixed cost of one step call, whatever its batch size (a GPU-like model)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="steps per client")
    p.add_argument("--task", default="navigate")
    p.add_argument("--wait-ms", type=float, default=5.0, help="max_batch_wait_ms of the batched server")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per mode, interleaved; the table shows the median run (a shared machine is noisy)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads for a CPU model; on a small shared CPU, 1 avoids threads "
                        "spinning against the HTTP threads")
    return Args(**vars(p.parse_args()))


def make_sim(args: Args):
    if args.fake:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from fakes import TimedFakeFactory

        return TimedFakeFactory(args.fake_step_ms)(), f"FakeSimulator ({args.fake_step_ms:g} ms per call)"
    import torch

    from bagel_world.simulator import make_simulator

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    sim = make_simulator(checkpoint=args.checkpoint, device=args.device)
    return sim, f"{type(sim).__name__} ({sim.checkpoint_dir or args.checkpoint})"


def run_load(url: str, args: Args, start_frames: np.ndarray, actions: tuple[str, ...]) -> float:
    """Wall seconds for all clients to finish all their steps (after every session is open)."""
    barrier = threading.Barrier(args.clients + 1)
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=600) as c:
                f = png_b64(start_frames[k % len(start_frames)])
                sid = c.post("/v1/sessions", json={"task": args.task, "frames": [f]}).raise_for_status().json()[
                    "session_id"]
                barrier.wait()
                for t in range(args.steps):
                    body = {"session_ids": [sid], "actions": [actions[(k + t) % len(actions)]], "seeds": [k * 1000 + t]}
                    c.post("/v1/sessions/step", json=body).raise_for_status()
                c.delete(f"/v1/sessions/{sid}")
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def run_mode(sim, args: Args, batch: int, start_frames: np.ndarray, actions: tuple[str, ...]) -> dict:
    settings = ServerSettings(max_batch_size=batch, max_batch_wait_ms=args.wait_ms if batch > 1 else 0.0,
                              max_sessions=max(256, args.clients))
    with run_in_thread(create_app(sim, settings)) as url:
        # Warm-up: one step outside the timing (first-call allocations, caches).
        with httpx.Client(base_url=url, timeout=600) as c:
            sid = c.post("/v1/sessions", json={"task": args.task, "frames": [png_b64(start_frames[0])]}).json()[
                "session_id"]
            c.post("/v1/sessions/step", json={"session_ids": [sid], "actions": [actions[0]], "seeds": [0]})
            c.delete(f"/v1/sessions/{sid}")
        wall = run_load(url, args, start_frames, actions)
        m = httpx.get(url + "/v1/metrics").json()
    return {"wall": wall, **m}


def main() -> None:
    args = parse()
    sim, label = make_sim(args)
    tpl = sim.tasks()[args.task]
    actions = tpl.canonical_actions or ("wait",)
    start_frames = procedural_scenarios(args.task, tuple(tpl.resolution), n=args.clients, seed=0).frames
    modes = (("one at a time", 1), ("dynamic batching", args.clients))
    runs: dict[int, list[dict]] = {b: [] for _, b in modes}
    for _ in range(args.repeat):  # interleaved, so drifting load hits both modes alike
        for _, batch in modes:
            runs[batch].append(run_mode(sim, args, batch, start_frames, actions))
    n = args.clients * args.steps
    print(f"\nServer throughput on loopback: {label}, task {args.task} at {tpl.resolution[1]}x{tpl.resolution[0]}, "
          f"{tpl.sampling.num_timesteps} timesteps, {args.clients} clients x {args.steps} steps, median of "
          f"{args.repeat} runs, {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs)\n")
    print("| mode | max_batch_size | steps | wall s | steps/s | mean batch | model call p50 ms | step p50 ms "
          "| step p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    sps = {}
    for mode, batch in modes:
        r = sorted(runs[batch], key=lambda x: x["wall"])[len(runs[batch]) // 2]
        sps[batch] = n / r["wall"]
        print(f"| {mode} | {batch} | {n} | {r['wall']:.2f} | {sps[batch]:.2f} | {r['mean_batch_size']:.1f} | "
              f"{r['batch_latency_ms_p50']:.0f} | {r['step_latency_ms_p50']:.0f} | {r['step_latency_ms_p95']:.0f} |")
    print(f"\nBatching gain: {sps[args.clients] / sps[1]:.2f}x steps/s")


if __name__ == "__main__":
    main()
