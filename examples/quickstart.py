"""Quickstart: a short imagined episode in each bagel-world env, saved as an animated GIF.

    python examples/quickstart.py                      # default model, GIFs in ./out/quickstart
    python examples/quickstart.py out/ --steps 10
    python examples/quickstart.py --backend http://localhost:8000   # a bagel-world server

Each env is driven by text actions (the task's canonical instructions, in turn). Goal
envs show the goal image to the right of the imagined frame. Prints one line per env.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image

import bagel_world  # noqa: F401  (registers the env ids)
from bagel_world.envs import ENV_IDS


def panel(env: gym.Env, obs, scale: int) -> Image.Image:
    """The rendered frame, with the goal image beside it when the env has one; upscaled."""
    frame = env.render()  # (H, W, 3) uint8
    if isinstance(obs, dict) and "goal" in obs:
        gap = np.full((frame.shape[0], 2, 3), 255, np.uint8)
        frame = np.concatenate([frame, gap, obs["goal"]], axis=1)
    img = Image.fromarray(frame)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def run_episode(env_id: str, args: argparse.Namespace) -> str:
    env = gym.make(env_id, render_mode="rgb_array", checkpoint=args.checkpoint, backend=args.backend,
                   device=args.device)
    actions = env.unwrapped.template.canonical_actions
    obs, info = env.reset(seed=args.seed)
    frames, total, latency = [panel(env, obs, args.scale)], 0.0, []
    t0 = time.perf_counter()
    for t in range(args.steps):
        obs, reward, terminated, truncated, info = env.step(actions[t % len(actions)])
        frames.append(panel(env, obs, args.scale))
        total += reward
        latency.append(info["step_latency_s"])
        if terminated or truncated:
            break
    wall = time.perf_counter() - t0
    path = args.out / f"{env_id}.gif"
    fps = env.metadata["render_fps"]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    env.close()
    return (f"{env_id:<20} steps={len(frames) - 1} return={total:+.3f} "
            f"mean step {1000 * np.mean(latency):.0f} ms ({len(frames) - 1} steps in {wall:.1f} s) -> {path}")


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
    args.out.mkdir(parents=True, exist_ok=True)
    for env_id in args.envs:
        print(run_episode(env_id, args), flush=True)


if __name__ == "__main__":
    main()
