"""Train PPO purely in imagination and save a policy that acts in the real simulator too.

    python examples/train_ppo.py --env BagelNavigate-v0 --timesteps 20000 --out runs/ppo
    # start imagined episodes from the real task's starts and goals (seeds 1000+, not evaluated):
    bagel-world scenarios --task navigate --episodes 2000 --out runs/scenarios/navigate.npz
    python examples/train_ppo.py --scenarios runs/scenarios/navigate.npz --out runs/ppo [--resume]
    tensorboard --logdir runs/ppo/tb
    bagel-world evaluate-agent --agent ppo --policy runs/ppo/policy.zip --episodes 20

Needs the `[rl]` extra (stable-baselines3, tensorboard). The N imagined envs run as one
model batch per step; the CNN policy (SB3 `MultiInputPolicy` over {frame, goal}) trains
on the imagined goal-similarity reward. Writes OUT/policy.zip, OUT/checkpoints/*.zip,
OUT/tb/ (TensorBoard), OUT/args.json and OUT/curve.png (the imagined return per step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from bagel_world.agents.ppo import PPOArgs, plot_training_curve, train_ppo


def main(argv: list[str] | None = None) -> int:
    defaults = PPOArgs()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default=defaults.env_id, help="a discrete-capable imagined env id")
    p.add_argument("--timesteps", type=int, default=defaults.timesteps)
    p.add_argument("--num-envs", type=int, default=defaults.num_envs)
    p.add_argument("--n-steps", type=int, default=defaults.n_steps, help="steps per env per update")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--n-epochs", type=int, default=defaults.n_epochs)
    p.add_argument("--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--gamma", type=float, default=defaults.gamma)
    p.add_argument("--ent-coef", type=float, default=defaults.ent_coef)
    p.add_argument("--max-episode-steps", type=int, default=None, help="imagined episode limit (default: registered)")
    p.add_argument("--scenarios", default=None,
                   help="start/goal scenario set .npz (e.g. from `bagel-world scenarios`; default: the model's own)")
    p.add_argument("--env-kwargs", type=json.loads, default={},
                   help='more keywords of the imagined env as JSON, e.g. \'{"progress_weight": 0}\' (a sparse judged reward)')
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--save-every", type=int, default=defaults.save_every, help="env steps between checkpoints")
    p.add_argument("--checkpoint", default=None, help="world model folder or repo id (default: the shipped model)")
    p.add_argument("--device", default=None, help="world model device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=defaults.out)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    args = dataclasses.replace(
        defaults, env_id=a.env, timesteps=a.timesteps, num_envs=a.num_envs, n_steps=a.n_steps,
        batch_size=a.batch_size, n_epochs=a.n_epochs, learning_rate=a.lr, gamma=a.gamma, ent_coef=a.ent_coef,
        max_episode_steps=a.max_episode_steps, scenarios=a.scenarios, env_kwargs=a.env_kwargs, resume=a.resume,
        save_every=a.save_every,
        checkpoint=a.checkpoint, device=a.device, seed=a.seed, out=a.out,
    )
    t0 = time.perf_counter()
    path = train_ppo(args)
    print(f"policy after {args.timesteps} imagined steps (this run: {time.perf_counter() - t0:.0f}s): {path}")
    print(f"TensorBoard: tensorboard --logdir {args.out}/tb")
    try:
        print(f"training curve: {plot_training_curve(args.out, f'{args.out}/curve.png')}")
    except (ImportError, ValueError) as e:  # matplotlib missing, or too short a run for an ended episode
        print(f"no training curve: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
