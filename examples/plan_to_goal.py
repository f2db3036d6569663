"""Plan to a goal in imagination, act in the real simulator, and show both side by side.

    python examples/plan_to_goal.py --out out/plan_to_goal.gif --steps 16
    python examples/plan_to_goal.py --candidates 64 --horizon 4 --iterations 3 --seed 3

Each step the CEM planner imagines candidate action sequences from the REAL current frame
(`bagel_world.agents.CEMPlanner`, world model only), executes the first action of its
plan in the real twin (`BagelNavigateReal-v0` by default), and the GIF shows, left to
right: the frame the model predicted for that action (the imagined plan), the frame the
real simulator produced (what really happened), and the goal image. The caption gives the
step, the action, the planner's best imagined goal score and the real goal distance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bagel_world.agents import CEMPlanner
from bagel_world.demo import save_gif
from bagel_world.envs.base import shared_simulator
from bagel_world.evaluate_agents import make_real_env


def panel(imagined: np.ndarray, real: np.ndarray, goal: np.ndarray, caption: str, scale: int) -> Image.Image:
    """[imagined | real | goal], upscaled, with titles above and a caption below."""
    H, W = real.shape[:2]
    gap = np.full((H, 2, 3), 255, np.uint8)
    row = Image.fromarray(np.concatenate([imagined, gap, real, gap, goal], axis=1))
    row = row.resize((row.width * scale, row.height * scale), Image.NEAREST)
    out = Image.new("RGB", (row.width, row.height + 28), (255, 255, 255))
    out.paste(row, (0, 14))
    d = ImageDraw.Draw(out)
    for i, title in enumerate(("imagined (plan)", "real", "goal")):
        d.text((i * (W + 2) * scale + 2, 1), title, fill=(0, 0, 0))
    d.text((2, row.height + 15), caption, fill=(0, 0, 0))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="navigate", choices=["navigate", "manipulate"], help="a goal-image task")
    p.add_argument("--out", type=Path, default=Path("out/plan_to_goal.gif"))
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="real env seed (held out: training uses 1000+)")
    p.add_argument("--checkpoint", default=None, help="world model (default: the shipped model)")
    p.add_argument("--device", default=None)
    p.add_argument("--candidates", type=int, default=32)
    p.add_argument("--horizon", type=int, default=3)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--elites", type=int, default=6)
    p.add_argument("--metric", default="feature", choices=["feature", "pixel"])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    sim = shared_simulator(a.checkpoint, None, a.device)
    env = make_real_env(a.task, template=sim.tasks()[a.task], max_steps=a.steps)
    planner = CEMPlanner(sim, candidates=a.candidates, horizon=a.horizon, iterations=a.iterations,
                         elites=a.elites, metric=a.metric, seed=a.seed, progress=False)
    obs, info = env.reset(seed=a.seed)
    planner.reset(env, obs, info, seed=a.seed)
    frames = [panel(obs["frame"], obs["frame"], obs["goal"], "start", a.scale)]
    total, success = 0.0, False
    for t in range(a.steps):
        plan = planner.plan(obs)
        obs, reward, terminated, truncated, info = env.step(plan.action)
        total += reward
        success = bool(info.get("is_success", False))
        dist = f" | real goal dist {info['goal_distance']:.2f}" if "goal_distance" in info else ""
        caption = f"{t + 1}: {plan.text} | imagined score {plan.score:+.2f}{dist}"
        imagined = plan.predicted_next if plan.predicted_next is not None else plan.predicted_end
        frames.append(panel(imagined, obs["frame"], obs["goal"], caption, a.scale))
        print(caption)
        if terminated or truncated:
            break
    planner.close()
    env.close()
    save_gif(frames, a.out, fps=2)
    print(f"{len(frames) - 1} steps, return {total:+.2f}, success {success}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
