"""Load and soak of the HTTP server on loopback: many concurrent clients, four tasks mixed.

    python benchmarks/soak_server.py                     # the shipped model, 64 clients x 100 steps, 2 runs
    python benchmarks/soak_server.py --clients 16 --steps 20
    python benchmarks/soak_server.py --fake              # no model: the fake simulator of tests/fakes.py

Client k opens its own session on task k mod 4 (from the checkpoint's start scenes) and steps
it through the task's canonical actions as fast as answers come back, then deletes it. The
same load runs `--runs` times on one server. Per run the table gives throughput, lost answers
(no 200), mixed answers (a frame index that is not the client's own next one), the largest
difference from the same clients replayed alone on the simulator (one step per call) at the
first step and over the whole rollout, and the process memory after the run. A batched model
call may differ from a lone one by float rounding, which shows as at most one grey level at the
first step (more is a mix-up, and the script exits 1); every frame is the context of the next
step, so over a rollout the difference compounds (a few grey levels after 25 steps).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
from pathlib import Path

import httpx
import psutil

from bagel_world.server import ServerSettings, create_app
from bagel_world.server.testing import SoakClient, replay_diffs, run_in_thread, soak_clients
from bagel_world.simulator.tasks import TASK_NAMES


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint folder or repo (default: make_simulator()'s)")
    p.add_argument("--device", default=None, help="e.g. cuda, cpu")
    p.add_argument("--fake", action="store_true", help="serve the model-free FakeSimulator from tests/fakes.py")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="steps per client")
    p.add_argument("--runs", type=int, default=2, help="runs of the whole load on one server (memory across runs)")
    p.add_argument("--replay-clients", type=int, default=8,
                   help="clients per run replayed alone for the frame check (all: --replay-clients -1)")
    p.add_argument("--wait-ms", type=float, default=5.0, help="max_batch_wait_ms")
    p.add_argument("--torch-threads", type=int, default=None)
    a = p.parse_args()
    if a.clients < 1 or a.steps < 1 or a.runs < 1:
        p.error(f"--clients, --steps and --runs must be >= 1; got {a.clients}, {a.steps}, {a.runs}")
    return a


def make_sim(args):
    if args.fake:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from fakes import FakeSimulator

        from bagel_world.simulator.tasks import default_templates

        return FakeSimulator(default_templates(large=False)), "FakeSimulator"
    import torch

    from bagel_world.simulator import make_simulator

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    sim = make_simulator(checkpoint=args.checkpoint, device=args.device)
    return sim, f"{type(sim).__name__} ({sim.checkpoint_dir or args.checkpoint})"


def plan(sim, args, run: int) -> list[SoakClient]:
    tasks = sim.tasks()
    names = [t for t in TASK_NAMES if t in tasks]
    starts = {t: sim.scenarios(t).frames for t in names}
    out = []
    for k in range(args.clients):
        t = names[k % len(names)]
        acts = tasks[t].canonical_actions or ("wait",)
        start = starts[t][(k // len(names) + run) % len(starts[t])]
        out.append(SoakClient(t, start, [acts[(k + s) % len(acts)] for s in range(args.steps)],
                              [run * 10**6 + k * 1000 + s for s in range(args.steps)]))
    return out


def main() -> None:
    args = parse()
    sim, label = make_sim(args)
    proc = psutil.Process()
    settings = ServerSettings(max_batch_size=args.clients, max_batch_wait_ms=args.wait_ms,
                              max_sessions=max(256, args.clients))
    rows = []
    gc.collect()
    rss0 = proc.memory_info().rss
    with run_in_thread(create_app(sim, settings)) as url:
        for run in range(args.runs):
            clients = plan(sim, args, run)
            res = soak_clients(url, clients)
            m = httpx.get(url + "/v1/metrics").json()
            n_replay = len(clients) if args.replay_clients < 0 else min(args.replay_clients, len(clients))
            # Spread the replayed clients over the tasks: k = 0, 1, 2, 3 are the four tasks.
            diffs = [replay_diffs(sim, clients[k], res.frames[k]) for k in range(n_replay)]
            del res.frames
            gc.collect()
            first = max((d[0] for d in diffs), default=None)  # step 1: the batched call alone
            whole = max((max(d) for d in diffs), default=None)  # the rollout: rounding compounds
            rows.append((run + 1, res, m, (first, whole), n_replay, proc.memory_info().rss))
    n = args.clients * args.steps
    print(f"\nServer soak on loopback: {label}, {args.clients} clients x {args.steps} steps, tasks mixed "
          f"({', '.join(TASK_NAMES)}), {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs); memory before the first run {rss0 / 2**20:.0f} MiB\n")
    print("| run | step requests | wall s | steps/s | mean batch | lost | mixed | max diff vs lone replay, "
          "step 1 / whole rollout (clients) | sessions left | RSS after MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run, res, m, (first, whole), n_replay, rss in rows:
        print(f"| {run} | {n} | {res.wall_s:.1f} | {n / res.wall_s:.1f} | {m['mean_batch_size']:.1f} | {res.lost} | "
              f"{res.mixed} | {first} / {whole} ({n_replay}) | {m['sessions']} | {rss / 2**20:.0f} |")
    for run, res, *_ in rows:
        for e in res.errors:
            print(f"run {run}: {e}")
    # A batched call may differ from a lone one by float rounding (at most 1 grey level at step 1);
    # each frame is the next step's context, so later frames may drift further apart.
    bad = any(r[1].lost or r[1].mixed or (r[3][0] is not None and r[3][0] > 1) for r in rows)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
