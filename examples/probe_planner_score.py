"""Does the planner's goal score track the real distance to the goal? A probe in the real twin.

    python examples/probe_planner_score.py --episodes 5 --seed 0 --horizon 3

Walks the privileged scripted agent through `BagelNavigateReal-v0` (held-out seeds), so the
visited states span far from and close to the goal. At every state t it computes the
planner's score (`metric="feature"`: centred cosine similarity in the model's visual feature
space, `CEMPlanner`'s default) of

- the REAL frame at t against the goal image, and
- the frame the world model IMAGINES after the next `horizon` scripted actions (a session
  opened on the real frame at t, as the planner does), against the goal image,

and reports the Spearman rank correlation of each with the real distance to the goal (at
t, and at t + horizon), over all states pooled and as the mean over episodes (one goal
each: what ranking candidates toward one goal needs). A perfect score would correlate -1
(higher score, closer goal).
Needs scipy (the `[eval]` extra brings it).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.agents import scripted_agent
from bagel_world.envs.base import shared_simulator
from bagel_world.evaluate_agents import make_real_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="first held-out seed")
    p.add_argument("--horizon", type=int, default=3, help="imagined steps ahead (the planner's horizon)")
    p.add_argument("--max-steps", type=int, default=64, help="scripted episode step limit")
    p.add_argument("--checkpoint", default=None, help="world model (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    sim = shared_simulator(a.checkpoint)
    template = sim.tasks()["navigate"]
    env = make_real_env("navigate", template=template, max_steps=a.max_steps)
    guide, actions = scripted_agent("navigate"), list(template.canonical_actions)

    def feats(frames) -> np.ndarray:
        return sim.centred_features("navigate", frames)

    real_score, real_dist, imag_score, imag_dist = [], [], [], []
    per_episode: list[tuple[float, float]] = []
    for seed in tqdm(range(a.seed, a.seed + a.episodes), desc="probe episodes"):
        obs, info = env.reset(seed=seed)
        guide.reset(env, obs, info, seed=seed)
        frames, dists, taken = [obs["frame"]], [info["goal_distance"]], []
        done = False
        while not done:  # the scripted episode: frames, distances and actions
            act = guide.act(obs, info)
            obs, _, terminated, truncated, info = env.step(act)
            frames.append(obs["frame"])
            dists.append(info["goal_distance"])
            taken.append(act)
            done = terminated or truncated
        goal = feats([obs["goal"]])[0]
        n_real, n_imag = len(real_score), len(imag_score)
        real_score += list(feats(frames) @ goal)
        real_dist += dists
        for t in range(len(taken) - a.horizon + 1):  # imagined `horizon` steps ahead of each state
            sid = sim.open("navigate", [frames[t]])
            try:
                for k in range(a.horizon):
                    out = sim.step([sid], [actions[taken[t + k]]], [seed * 1000 + t])[0]
            finally:
                sim.close(sid)
            imag_score.append(float(feats([out.frame])[0] @ goal))
            imag_dist.append(dists[t + a.horizon])
        per_episode.append((spearmanr(real_score[n_real:], real_dist[n_real:]).statistic,
                            spearmanr(imag_score[n_imag:], imag_dist[n_imag:]).statistic))
    env.close()

    pooled = (spearmanr(real_score, real_dist).statistic, spearmanr(imag_score, imag_dist).statistic)
    means = np.nanmean(np.asarray(per_episode, np.float64), axis=0)
    print("| goal score of | Spearman with real goal distance, pooled | mean per episode | states |")
    print("|---|---|---|---|")
    print(f"| the real frame | {pooled[0]:+.2f} | {means[0]:+.2f} | {len(real_score)} |")
    ahead = f"{a.horizon} step{'s' if a.horizon != 1 else ''} ahead"
    print(f"| the frame imagined {ahead} | {pooled[1]:+.2f} | {means[1]:+.2f} | {len(imag_score)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
