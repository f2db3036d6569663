"""How far a session stepped inside a batch drifts from the same session stepped alone.

    python benchmarks/batch_drift.py                  # the shipped model, 100 steps per task
    python benchmarks/batch_drift.py --steps 40 --checkpoint PATH

Per task: session 0 of a batch of four (the others take other actions and seeds) and a lone
session with the same start, actions and seeds are stepped side by side. A batched call
differs from a lone one by float rounding; every frame is the next step's context, so the
difference can grow. The table gives the largest per-pixel difference (grey levels) at step
1, its median and maximum over the rollout, and the first step above 16 levels.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bagel_world.simulator import make_simulator
from bagel_world.simulator.tasks import TASK_NAMES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sim = make_simulator(args.checkpoint)
    print("| task | step 1 | median | max (at step) | first step above 16 |")
    print("|---|---|---|---|---|")
    for task in TASK_NAMES:
        acts = sim.tasks()[task].canonical_actions
        starts = sim.scenarios(task).frames[:4]
        rng = np.random.default_rng(0)
        plan = [acts[i] for i in rng.integers(0, len(acts), args.steps)]
        batch = [sim.open(task, [starts[k % len(starts)]]) for k in range(4)]
        alone = sim.open(task, [starts[0]])
        d = []
        for t, a in enumerate(plan):
            out = sim.step(batch, [a] + [acts[(t + k) % len(acts)] for k in (1, 2, 3)], [t, 7 + t, 8 + t, 9 + t])
            lone = sim.step([alone], [a], [t])[0]
            d.append(int(np.abs(out[0].frame.astype(np.int16) - lone.frame.astype(np.int16)).max()))
        big = next((i + 1 for i, x in enumerate(d) if x > 16), None)
        print(f"| {task} | {d[0]} | {int(np.median(d))} | {max(d)} ({int(np.argmax(d)) + 1}) | {big or '-'} |", flush=True)
        for s in batch + [alone]:
            sim.close(s)


if __name__ == "__main__":
    main()
