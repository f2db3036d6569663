"""Env steps per second: one env, and a vector env stepping N sub-envs in one model batch.

    python benchmarks/bench_envs.py                          # BagelNavigate-v0, default model, CPU
    python benchmarks/bench_envs.py --tasks all --num-envs 8 --steps 6
    python benchmarks/bench_envs.py --checkpoints old/,new/ --num-envs 16 --rounds 3   # side by side
    python benchmarks/bench_envs.py --device cuda --checkpoint /path/to/BAGEL-7B-MoT

An env step is everything `env.step` does: one generated frame (all denoising steps) plus
the reward (the two judged-progress questions for BagelNavigate-v0's default reward, an
embed for the feature rewards, a yes/no score for BagelFutureFrame-v0). Success thresholds
are set out of reach so no episode ends mid-measurement, and every measurement starts after
the window is full (so a step includes whatever keeps the context bounded).

With several checkpoints the measurements alternate A B A B ... for `--rounds` rounds (a
shared CPU drifts; alternating spreads the drift over all of them), and the table gives
the median over rounds and the ratio to the first checkpoint.

The FLOP column counts one vector step's floating-point operations with
`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention) divided by
the sub-envs; "limit" is that count over this CPU's measured fp32 matmul rate, the time a
step would take if every operation ran at the speed of one large matmul. A second table
splits those FLOPs by the model part that spends them (the MoT language model, the
autoencoder's decoder and encoder, the SigLIP ViT), which says where fewer FLOPs must come
from.
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

NEVER = {"BagelNavigate-v0": {"success_threshold": 1.0, "reached_threshold": 1.0},
         "BagelManipulate-v0": {"success_threshold": 1.0},
         "BagelFutureFrame-v0": {"success_threshold": 1.0}, "BagelMultiview-v0": {}}


def step_times(step, steps: int) -> np.ndarray:
    """Wall seconds of each of `steps` calls of step(t)."""
    out = []
    for t in range(steps):
        t0 = time.perf_counter()
        step(t)
        out.append(time.perf_counter() - t0)
    return np.array(out)


PARTS = {"Qwen2MoTForCausalLM": "language model (MoT)", "Decoder": "autoencoder decoder",
         "Encoder": "autoencoder encoder", "SiglipVisionModel": "ViT"}


def flops_by_part(counts: dict[str, dict], num_envs: int) -> dict[str, float]:
    """FLOPs per sub-env step of each model part in `PARTS`, from `FlopCounterMode.get_flop_counts()`;
    "other" is the rest (connectors, timestep and position embedders, heads)."""
    total = sum(counts.get("Global", {}).values())
    parts = {label: sum(counts.get(name, {}).values()) / num_envs for name, label in PARTS.items()}
    parts["other"] = total / num_envs - sum(parts.values())
    return {"total": total / num_envs, **parts}


def time_vector(env_id: str, num_envs: int, steps: int, common: dict,
                flops: bool = False) -> tuple[float, dict[str, float]]:
    """(median seconds per vector step, FLOPs per sub-env step by part, or {} when not counted),
    after the window fills."""
    warm = common["window"]
    kw = dict(action_mode="discrete", max_episode_steps=steps + warm + 4, **NEVER[env_id],
              checkpoint=common["checkpoint"], device=common["device"])
    if num_envs == 1:  # a plain env, as a single user makes it
        env = gym.make(env_id, **kw)
        vec = _AsVector(env)
    else:
        vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kw)
    vec.reset(seed=0)
    n = vec.single_action_space.n
    for t in range(warm + 1):
        vec.step((np.arange(num_envs) + t) % n)
    per_env_flops: dict[str, float] = {}
    if flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False, depth=1)
        with counter:
            vec.step(np.zeros(num_envs, np.int64))
        per_env_flops = flops_by_part(counter.get_flop_counts(), num_envs)
    times = step_times(lambda t: vec.step((np.arange(num_envs) + t) % n), steps)
    vec.close()
    return float(np.median(times)), per_env_flops


class _AsVector:
    """Just enough of the vector API over one env for the timing loop."""

    def __init__(self, env):
        self.env, self.single_action_space = env, env.action_space

    def reset(self, seed):
        return self.env.reset(seed=seed)

    def step(self, actions):
        return self.env.step(int(actions[0]))

    def close(self):
        self.env.close()


def matmul_rate(n: int = 1024, reps: int = 20) -> float:
    """FLOP/s of one large fp32 matmul on this machine (the per-operation speed limit)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="BagelNavigate-v0", help="comma-separated env ids, or 'all'")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    p.add_argument("--checkpoint", default=None, help="one checkpoint (default: the shipped model)")
    p.add_argument("--checkpoints", default=None, help="comma-separated checkpoints to compare side by side")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds per checkpoint (A B A B ...)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids = list(ENV_IDS) if args.tasks == "all" else args.tasks.split(",")
    ckpts = args.checkpoints.split(",") if args.checkpoints else [args.checkpoint]
    # Each checkpoint's folder name, or its whole path where two compared folders share a name.
    base_names = [os.path.basename(os.path.normpath(c)) if c else "shipped" for c in ckpts]
    label = {c: (c if base_names.count(b) > 1 and c else b) for c, b in zip(ckpts, base_names)}
    sims = {c: shared_simulator(c, None, args.device) for c in ckpts}  # load once, outside the timings
    for sim in sims.values():  # inference only; FlopCounterMode's module hooks need this
        sim.engine.model.requires_grad_(False)
        sim.engine.vae.requires_grad_(False)
    rate = matmul_rate()
    print(f"device: {args.device or 'cpu'}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}; fp32 matmul {rate / 1e9:.0f} GFLOP/s; "
          f"{args.rounds} alternating round(s) of {args.steps} timed steps\n")
    for c, sim in sims.items():
        tpl = sim.tasks()["navigate"]
        print(f"- {c or 'shipped model'}: {sim.checkpoint_dir}; {tpl.resolution[1]}x"
              f"{tpl.resolution[0]}, {tpl.sampling.num_timesteps} timesteps ({tpl.sampling.num_timesteps - 1} "
              f"flow evaluations), cfg_text {tpl.sampling.cfg_text_scale}, window {tpl.window}, "
              f"slide_window {tpl.slide_window}")
    print("\n| env | checkpoint | sub-envs | median ms per call | env steps/s | vs first | MFLOP per env step | "
          "limit steps/s | share of limit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    parts: list[tuple[str, str | None, int, dict[str, float]]] = []
    for env_id in ids:
        for n in (1, args.num_envs):
            ms = {c: [] for c in ckpts}
            flops = {}
            for r in range(args.rounds):
                for c in ckpts:
                    common = {"checkpoint": c, "device": args.device, "window": sims[c].tasks()["navigate"].window}
                    sec, f = time_vector(env_id, n, args.steps, common, flops=r == 0)
                    ms[c].append(sec)
                    flops.setdefault(c, f)
            base = None
            for c in ckpts:
                med = float(np.median(ms[c]))
                sps = n / med
                base = base or sps
                limit = rate / flops[c]["total"]
                print(f"| {env_id} | {label[c]} | {n} | "
                      f"{1000 * med:.0f} | {sps:.1f} | {sps / base:.2f}x | {flops[c]['total'] / 1e6:.0f} | {limit:.0f} | "
                      f"{sps / limit:.1%} |", flush=True)
                parts.append((env_id, c, n, flops[c]))
    names = [*PARTS.values(), "other"]
    print("\nMFLOP per env step by model part (share of the step):\n")
    print("| env | checkpoint | sub-envs | " + " | ".join(names) + " |")
    print("|---|---|---:|" + "---:|" * len(names))
    for env_id, c, n, f in parts:
        cells = [f"{f[k] / 1e6:.0f} ({f[k] / f['total']:.0%})" for k in names]
        print(f"| {env_id} | {label[c]} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
