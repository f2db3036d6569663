"""Quickstart: a short imagined episode in each bagel-world env, saved as an animated GIF.

    python examples/quickstart.py                      # default model, GIFs in ./out/quickstart
    python examples/quickstart.py out/ --steps 10
    python examples/quickstart.py --backend http://localhost:8000   # a bagel-world server

Each env is driven by text actions (the task's canonical instructions, in turn). Goal
envs show the goal image to the right of the imagined frame. Prints one line per env.
The same job as `bagel-world demo`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bagel_world.demo import run_demo
from bagel_world.envs import ENV_IDS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=Path("out/quickstart"), help="folder for the GIFs")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=4, help="GIF upscaling factor (nearest neighbour)")
    p.add_argument("--checkpoint", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--backend", default=None, help="http(s) URL of a bagel-world server instead of a local model")
    p.add_argument("--device", default=None)
    p.add_argument("--envs", nargs="*", default=list(ENV_IDS), choices=ENV_IDS)
    args = p.parse_args()
    rows = run_demo(out=args.out, steps=args.steps, seed=args.seed, checkpoint=args.checkpoint, backend=args.backend,
                    device=args.device, env_ids=args.envs, scale=args.scale)
    for r in rows:
        print(f"{r['env']:<20} steps={r['steps']} return={r['return']:+.3f} "
              f"{r['steps_per_s']:.2f} steps/s -> {r['gif']}", flush=True)


if __name__ == "__main__":
    main()
