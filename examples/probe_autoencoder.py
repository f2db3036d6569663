"""How much of each task's real frames survives the autoencoder alone?

Every imagined frame is decoded by the checkpoint's autoencoder, so real frames encoded and
decoded again bound what the world model can reach (`bagel-world eval` reports the same
ceiling beside its tables). This probe measures it without imagining anything: real episodes
of every task on held-out seeds (the eval's exploration policy, or the navigate twin with wall
panels), frames at the given steps, their round trip through the autoencoder, and PSNR, SSIM
and persistence against the real frames; `--strip` saves real (top) and round-tripped
(bottom) frames of the first episode of each task.

    python examples/probe_autoencoder.py --episodes 8 --seed 200
    python examples/probe_autoencoder.py --checkpoint <model> --tasks navigate --landmarks
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.simulator import make_simulator
from bagel_world.simulator.tasks import TASK_NAMES
from bagel_world.training.evaluate import autoencoder_ceiling, fmt, real_rollout, round_trip


def landmark_frames(seed: int, steps: int) -> list[np.ndarray]:
    """Frames of one walk of the panelled one-room navigate twin (as eval-progress walks it)."""
    from bagel_world.evaluate_progress import walk

    return list(walk("navigate", seed, steps, 0.3, "one_room", None, True)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="folder or repo id (default: the shipped model)")
    ap.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma-separated tasks")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=200, help="first seed (training recordings use 1000 and up)")
    ap.add_argument("--steps", default="0,1,4,8,16", help="comma-separated steps of each episode to measure")
    ap.add_argument("--landmarks", action="store_true",
                    help="navigate: walks of the one_room twin with wall panels instead of the default twin")
    ap.add_argument("--strip", default=None, help="save real-over-round-trip strips to this PNG")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASK_NAMES))
    if unknown or not tasks:
        raise SystemExit(f"--tasks: unknown {unknown or tasks}; accepted: {', '.join(TASK_NAMES)}")
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    try:
        steps = sorted({int(s) for s in args.steps.split(",")})
    except ValueError:
        raise SystemExit(f"--steps must be comma-separated whole numbers, got {args.steps!r}") from None
    if steps[0] < 0:
        raise SystemExit(f"--steps must be >= 0, got {args.steps!r}")
    sim = make_simulator(args.checkpoint, device="cpu")
    print("| task | frames | autoencoder PSNR | SSIM | persistence |\n|---|---|---|---|---|")
    strips = []
    for task in tasks:
        res = tuple(sim.tasks()[task].resolution)
        episodes = []
        for seed in range(args.seed, args.seed + args.episodes):
            if task == "navigate" and args.landmarks:
                ep = landmark_frames(seed, max(steps))
            else:
                ep = real_rollout(task, seed, max(steps), res)[0]
            episodes.append([ep[s] for s in steps if s < len(ep)])
        c = autoencoder_ceiling(sim, task, [f for ep in episodes for f in ep])
        print(f"| {task} | {c['frames']} | {c['psnr']:.2f} | {c['ssim']:.3f} | {fmt(c['persistence'])} |")
        if args.strip:
            real, back = round_trip(sim, episodes[0])
            strips.append(np.concatenate([np.concatenate(real, 1), np.concatenate(back, 1)], 0))
    if args.strip:
        width = max(s.shape[1] for s in strips)  # a walk that ended early gives a shorter row
        strips = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
        img = Image.fromarray(np.concatenate(strips, 0))
        img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(args.strip)
        print(f"strip: {args.strip}")


if __name__ == "__main__":
    main()
