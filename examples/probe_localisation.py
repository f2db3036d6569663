"""Can a frame tell where it was taken? A plain CNN localiser, and a planner on its answer.

The progress judge asks one relational question ("how far is the goal view from here?") and
ranks frames poorly (README, Agents). This probe asks a simpler one: where in the room a single
frame was taken. It trains a small CNN on recorded frames (`bagel-world record`, navigate with
poses) to regress x, z (m) and the heading (as cos, sin), reports the median error on the held-out
last episodes, then runs the one-step planner in the real twin the way
`probe_oracle_planner.py` does: every action is taken from a saved copy of the state, and each
REAL next frame is scored by minus the distance between its located place and the goal image's,
plus `--yaw-weight` m per 180 degrees of heading between them. That is the planner's
`metric="located"` with a perfect world model and this CNN in place of the model's location
answers: what judging progress by localisation can reach here.

    python examples/probe_localisation.py --data data/recA --layout one_room --landmarks

`--yaw-weight 0.5,2,4` runs the walk once per weight; `--noise S` walks on the true poses plus
independent Gaussian errors of S m per axis instead of the CNN's places; `--localiser F` keeps the trained CNN in F
(trained and saved if F does not exist, loaded if it does), so another walk skips the training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.evaluate_agents import (
    add_landmarks_option,
    every_action_outcome,
    make_real_env,
    pick_figures,
    real_env_kwargs,
)
from bagel_world.simulator.progress import LOCATED_YAW_WEIGHT, located_distance, pose_distance


class Localiser(nn.Module):
    """(B, 3, 64, 64) in [-1, 1] -> (B, 4): x and z scaled to [-1, 1] over the floor, cos and sin of the heading."""

    def __init__(self, width: int = 32):
        super().__init__()
        c = width
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * c * 16, 256), nn.ReLU(), nn.Linear(256, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def to_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def targets(poses: np.ndarray, floor: float) -> torch.Tensor:
    yaw = np.deg2rad(poses[:, 2])
    half = floor / 2
    return torch.from_numpy(np.stack([poses[:, 0] / half - 1, poses[:, 1] / half - 1, np.cos(yaw), np.sin(yaw)], 1)
                            .astype(np.float32))


def locate(net: Localiser, frames: np.ndarray, floor: float) -> np.ndarray:
    """(B, 3) located [x, z, yaw_deg] of (B, 64, 64, 3) uint8 frames."""
    with torch.no_grad():
        o = torch.cat([net(to_input(frames[i : i + 512])) for i in range(0, len(frames), 512)]).numpy()
    half = floor / 2
    return np.stack([(o[:, 0] + 1) * half, (o[:, 1] + 1) * half, np.rad2deg(np.arctan2(o[:, 3], o[:, 2]))], 1)


def place(net: Localiser, a: argparse.Namespace, rng: np.random.Generator, frames: np.ndarray,
          poses: list[list[float]]) -> np.ndarray:
    """(B, 3) [x, z, yaw_deg] of the frames: the CNN's, or with `a.noise` the true `poses` plus
    independent Gaussian noise (`a.noise` m per axis, 3 degrees of heading) drawn from `rng`."""
    if a.noise is None:
        return locate(net, frames, a.floor)
    return np.asarray(poses, np.float64) + rng.normal(0, [a.noise, a.noise, 3.0], (len(poses), 3))


def walk(env, net: Localiser, a: argparse.Namespace, yaw_weight: float) -> dict:
    """The one-step located planner on real outcomes over the seeds (places from `place`); its
    figures."""
    successes, returns, before, after, picks, scores = [], [], [], [], [], []
    for seed in tqdm(range(a.seed, a.seed + a.episodes), desc=f"located planner, yaw weight {yaw_weight}"):
        pick_rng, noise_rng = np.random.default_rng(seed), np.random.default_rng(10_000 + seed)
        obs, info = env.reset(seed=seed)
        goal = place(net, a, noise_rng, obs["goal"][None], [[*info["goal_pos"], info["goal_yaw_deg"]]])[0]
        done, ret = False, 0.0
        while not done:
            infos: list[dict] = []
            dist, outcomes = every_action_outcome(env, "goal_distance", infos)
            located = place(net, a, noise_rng, np.stack(outcomes), [[*i["agent_pos"], i["agent_yaw_deg"]] for i in infos])
            score = -pose_distance(*located_distance(located, goal), yaw_weight)
            if a.explore > 0 and pick_rng.random() < a.explore:  # the planner's `explore`
                act = int(pick_rng.integers(len(score)))
            else:
                act = int(pick_rng.choice(np.flatnonzero(score >= score.max() - 1e-9)))
            before.append(float(info["goal_distance"]))
            after.append(dist)
            picks.append(act)
            scores.append(score.tolist())
            obs, r, terminated, truncated, info = env.step(act)
            ret, done = ret + float(r), terminated or truncated
        successes.append(bool(info["is_success"]))
        returns.append(ret)
    f = pick_figures(np.array(before), np.array(after), picks, scores)
    ok = np.array(successes)
    res = {"yaw_weight": yaw_weight, "explore": a.explore, "successes": int(ok.sum()), "episodes": len(ok),
           "return": float(np.mean(returns)), "return_stderr": float(np.std(returns) / np.sqrt(len(returns))), **f}
    print(f"yaw weight {yaw_weight}, explore {a.explore}, seeds {a.seed}-{a.seed + a.episodes - 1}: success "
          f"{ok.sum()}/{len(ok)}, return {res['return']:+.2f} ± {res['return_stderr']:.2f}, pick - average action "
          f"{f['chosen_minus_average']:+.3f} ± {f['stderr']:.3f} m per step, a best action {f['chosen_is_best']:.0%} "
          f"(chance {f['chance_is_best']:.0%})")
    return res


def main(argv=None) -> int:
    from bagel_world.training.data import Shard, list_shards

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="navigate recordings with poses (`bagel-world record`)")
    p.add_argument("--layout", default="one_room", help="the layout the recordings and the walk are in")
    add_landmarks_option(p)
    p.add_argument("--floor", type=float, default=8.0, help="side of the floor in m (one_room: 8)")
    p.add_argument("--holdout", type=int, default=64, help="last episodes of the recordings kept for the error")
    p.add_argument("--steps", type=int, default=3000, help="training steps of 128 frames")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="first seed of the walk in the real twin")
    p.add_argument("--max-steps", type=int, default=64)
    p.add_argument("--yaw-weight", default=str(LOCATED_YAW_WEIGHT), help="m of score per 180 degrees of heading error; a "
                   "comma-separated list walks once per weight")
    p.add_argument("--explore", type=float, default=0.0, help="probability of a random action instead of the "
                   "best-scored one at each step")
    p.add_argument("--noise", type=float, default=None, help="walk on the true poses plus Gaussian noise of this "
                   "many m per axis (and 3 degrees) instead of the CNN's places: a localiser with independent errors")
    p.add_argument("--localiser", default=None, help="the CNN's weights: loaded if the file exists, else trained and saved")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    shards = [Shard.load(f) for f in list_shards(a.data, "navigate")]
    shards = [s for s in shards if s.has_progress]
    if not shards:
        p.error(f"no navigate shards with poses under {a.data}")
    frames = np.concatenate([s.frames.reshape(-1, *s.frames.shape[2:]) for s in shards])
    poses = np.concatenate([s.poses.reshape(-1, s.poses.shape[-1]) for s in shards])
    n_test = a.holdout * shards[-1].frames.shape[1]
    if not 0 < n_test < len(frames):
        p.error(f"--holdout {a.holdout} episodes leaves no frames to train or test on")
    tr_f, tr_t, te_f, te_p = frames[:-n_test], targets(poses[:-n_test], a.floor), frames[-n_test:], poses[-n_test:]

    try:
        weights = [float(w) for w in a.yaw_weight.split(",")]
    except ValueError:
        p.error(f"--yaw-weight takes numbers separated by commas, got {a.yaw_weight!r}")
    net = Localiser()
    if a.localiser and Path(a.localiser).is_file():
        net.load_state_dict(torch.load(a.localiser))
    else:
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        for _ in tqdm(range(a.steps), desc="train localiser"):
            i = rng.integers(0, len(tr_f), 128)
            loss = ((net(to_input(tr_f[i])) - tr_t[i]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if a.localiser:
            torch.save(net.state_dict(), a.localiser)
    net.eval()
    err, yaw_err = located_distance(locate(net, te_f, a.floor), te_p[:, :3])
    print(f"held-out frames {len(te_f)}: median place error {np.median(err):.2f} m (mean {err.mean():.2f}), "
          f"median heading error {np.median(yaw_err):.1f} deg")

    env = make_real_env("navigate", max_steps=a.max_steps, **real_env_kwargs("navigate", a.layout, None, a.landmarks))
    res = {"median_place_error_m": float(np.median(err)), "median_heading_error_deg": float(np.median(yaw_err)),
           "walks": [walk(env, net, a, w) for w in weights]}
    env.close()
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
