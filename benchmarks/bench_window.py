"""Step cost over a long episode: the context window keeps step 200 as cheap as step 5.

    python benchmarks/bench_window.py [--steps 200] [--checkpoint PATH]

Opens one imagined navigation session and steps it; prints latency and context length at
chosen steps as a markdown table (median over a few neighbouring steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bagel_world.simulator import make_simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--task", default="navigate")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sim = make_simulator(args.checkpoint)
    tpl = sim.tasks()[args.task]
    start = np.random.default_rng(0).integers(0, 256, (*tpl.resolution, 3)).astype(np.uint8)
    sid = sim.open(args.task, [start])
    lat, length = [], []
    for t in range(args.steps):
        t0 = time.perf_counter()
        sim.step([sid], [tpl.canonical_actions[t % len(tpl.canonical_actions)]], [t])
        lat.append(time.perf_counter() - t0)
        length.append(sim._sessions[sid].base.length)
    print(f"\ntask={args.task} window={tpl.window} frames, resolution={tpl.resolution}, "
          f"{tpl.sampling.num_timesteps} timesteps, torch threads={args.threads}\n")
    print("| step | latency (ms, median of 5) | context tokens |")
    print("|---|---|---|")
    for s in (1, 2, 3, 5, 10, 50, 100, 200):
        if s <= args.steps:
            window = lat[max(0, s - 3) : s + 2]
            print(f"| {s} | {1000 * statistics.median(window):.1f} | {length[s - 1]} |")


if __name__ == "__main__":
    main()
