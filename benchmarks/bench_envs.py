"""Env steps per second: one env, and a vector env stepping N sub-envs in one model batch.

    python benchmarks/bench_envs.py                          # BagelNavigate-v0, default model, CPU
    python benchmarks/bench_envs.py --tasks all --num-envs 8 --steps 6
    python benchmarks/bench_envs.py --device cuda --checkpoint /path/to/BAGEL-7B-MoT

An env step is everything `env.step` does: one generated frame (all denoising steps) plus
the reward (an embed, or a yes/no score for BagelFutureFrame-v0). Success thresholds are
set out of reach so no episode ends mid-measurement. Reports the median time per call
(robust on a shared CPU) as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import numpy as np
import torch

import bagel_world  # noqa: F401  (registers the env ids)
from bagel_world.envs import ENV_IDS, shared_simulator

NEVER = {"BagelNavigate-v0": {"success_threshold": 1.0}, "BagelManipulate-v0": {"success_threshold": 1.0},
         "BagelFutureFrame-v0": {"success_threshold": 1.0}, "BagelMultiview-v0": {}}


def step_times(step, steps: int) -> np.ndarray:
    """Wall seconds of each of `steps` calls of step(t)."""
    out = []
    for t in range(steps):
        t0 = time.perf_counter()
        step(t)
        out.append(time.perf_counter() - t0)
    return np.array(out)


def time_single(env_id: str, steps: int, common: dict) -> np.ndarray:
    """Seconds per step of one env (after one warm-up step)."""
    env = gym.make(env_id, action_mode="discrete", max_episode_steps=steps + 2, **NEVER[env_id], **common)
    env.reset(seed=0)
    env.step(0)
    n = env.action_space.n
    times = step_times(lambda t: env.step(t % n), steps)
    env.close()
    return times


def time_vector(env_id: str, num_envs: int, steps: int, common: dict) -> np.ndarray:
    """Seconds per vector step of `num_envs` sub-envs (after one warm-up step)."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                       action_mode="discrete", max_episode_steps=steps + 2, **NEVER[env_id], **common)
    vec.reset(seed=0)
    n = vec.single_action_space.n
    vec.step(np.zeros(num_envs, np.int64))
    times = step_times(lambda t: vec.step((np.arange(num_envs) + t) % n), steps)
    vec.close()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="BagelNavigate-v0", help="comma-separated env ids, or 'all'")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids = list(ENV_IDS) if args.tasks == "all" else args.tasks.split(",")
    common = {"checkpoint": args.checkpoint, "device": args.device}
    sim = shared_simulator(args.checkpoint, None, args.device)  # load once, outside the timings
    tpl = sim.tasks()["navigate"]

    print(f"device: {args.device or 'cpu'}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"checkpoint: {getattr(sim, 'checkpoint_dir', None)}; resolution {tpl.resolution[1]}x{tpl.resolution[0]}, "
          f"{tpl.sampling.num_timesteps} timesteps, window {tpl.window}\n")
    # The median step time: robust to other processes sharing the CPU.
    print("| env | sub-envs | timed steps | median ms per call | env steps/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for env_id in ids:
        single = float(np.median(time_single(env_id, args.steps, common)))
        rate1 = 1 / single
        print(f"| {env_id} | 1 | {args.steps} | {1000 * single:.0f} | {rate1:.1f} | 1.0x |", flush=True)
        vec = float(np.median(time_vector(env_id, args.num_envs, args.steps, common)))
        rate = args.num_envs / vec
        print(f"| {env_id} | {args.num_envs} (vector) | {args.steps} | {1000 * vec:.0f} | {rate:.1f} | "
              f"{rate / rate1:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
