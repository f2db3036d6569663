"""Can the judge's training data teach distance at all? A plain CNN on the same questions.

The world model's progress judge is trained on "How far away is the goal view?" with the
goal image in its context (`bagel-world train`, `ClipSampler` with progress questions), and
ranks the frames of `bagel-world eval-progress` walks no better than chance. This probe asks
whether the data can teach the task, independently of the world model: it draws the judge's
own training questions from recordings (the same sampler: hindsight and episode goals, the
same distance bins, one frame and the goal image), trains a small convolutional classifier
over the bins on the two images stacked as 6 channels, and scores it the way eval-progress
scores the judge: Spearman (scipy) of the expected distance with the real distance on real
walks of held-out seeds (the scripted agent with a share of random actions).

A CNN that ranks the walks well says the judge's training signal is there and the world
model fails to pick it up; one that does not says the one-frame question itself is the limit
(see `probe_judge_ceiling.py` for the ceiling from privileged features).

    python examples/probe_judge_learnability.py --data data/rec5 --layout one_room
    python examples/probe_judge_learnability.py --data data/rec6 --layout one_room --landmarks
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn


class PairNet(nn.Module):
    """(B, 6, 64, 64) frame and goal, stacked -> (B, bins) logits."""

    def __init__(self, bins: int, width: int = 32):
        super().__init__()
        c = width
        self.net = nn.Sequential(
            nn.Conv2d(6, c, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * c * 16, 128), nn.ReLU(), nn.Linear(128, bins),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def stack(frames: np.ndarray, goals: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 twice -> (B, 6, H, W) float in [-1, 1]."""
    x = np.concatenate([frames, goals], axis=-1).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def training_questions(data: str, n: int, seed: int, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n distance questions as the world model is trained on them: (frames, goals, bin index)."""
    from pathlib import Path

    from bagel_world.simulator.progress import DISTANCE_BINS, DISTANCE_QUESTION
    from bagel_world.training.data import ClipSampler
    from bagel_world.training.pipeline import load_training_shards

    shards, _ = load_training_shards(Path(data), holdout=8)
    shards = [s for s in shards if s.task == "navigate" and s.has_progress]
    if not shards:
        raise SystemExit(f"no navigate recordings with progress poses under {data}")
    sampler = ClipSampler(shards, window=1, rng=np.random.default_rng(seed), progress_share=1.0, judge_share=1.0,
                          progress_rule=rule)
    answers = DISTANCE_BINS["navigate"].answers
    frames, goals, labels = [], [], []
    while len(labels) < n:
        c = sampler.sample()
        if c.question == DISTANCE_QUESTION:
            frames.append(c.frames[-1])
            goals.append(c.goal)
            labels.append(answers.index(c.answer))
    return np.stack(frames), np.stack(goals), np.asarray(labels)


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm

    from bagel_world.evaluate_progress import walk
    from bagel_world.simulator.progress import DISTANCE_BINS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="recordings (bagel-world record) with navigate progress poses")
    p.add_argument("--layout", default="one_room")
    p.add_argument("--landmarks", action="store_true", help="walk the panelled one-room (record the data with it too)")
    p.add_argument("--success", default="pose", choices=("pose", "view"), help="the progress rule, as training's")
    p.add_argument("--questions", type=int, default=20000, help="training questions drawn")
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--episodes", type=int, default=8, help="held-out walks to score")
    p.add_argument("--seed", type=int, default=200, help="first walk seed (validation seeds by default)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    bins = DISTANCE_BINS["navigate"]
    centres = torch.tensor(bins.centres, dtype=torch.float32)

    frames, goals, labels = training_questions(a.data, a.questions, 0, a.success)
    x_all, y_all = stack(frames, goals), torch.from_numpy(labels)
    prior = np.bincount(labels, minlength=len(centres)) / len(labels)
    net = PairNet(len(centres))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(1)
    losses = []
    for _ in tqdm(range(a.steps), desc="train pair CNN"):
        idx = torch.from_numpy(rng.integers(0, len(y_all), a.batch_size))
        loss = nn.functional.cross_entropy(net(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    prior_ce = float(-np.log(prior[labels] + 1e-12).mean())  # a classifier that ignores both images

    real, judged, visible = [], [], []
    net.eval()
    for seed in tqdm(range(a.seed, a.seed + a.episodes), desc="score walks"):
        fr, _, dist, _, goal, infos = walk("navigate", seed, 40, 0.3, a.layout, a.success, a.landmarks)
        with torch.no_grad():
            logp = torch.log_softmax(net(stack(np.asarray(fr), np.repeat(goal[None], len(fr), 0))), -1)
        judged += list((logp.exp() * centres).sum(-1).numpy())
        real += list(dist)
        visible += [bool(i["box_visible"]) for i in infos]
    real_a, judged_a, vis = np.asarray(real), np.asarray(judged), np.asarray(visible)
    print(f"| training questions | {len(labels)} from {a.data} (rule {a.success}) |")
    print(f"| cross-entropy, last 100 steps / the bin prior's | {np.mean(losses[-100:]):.3f} / {prior_ce:.3f} |")
    print(f"| Spearman on {len(real_a)} walk frames, seeds {a.seed}-{a.seed + a.episodes - 1} | "
          f"{spearmanr(judged_a, real_a).statistic:+.2f} |")
    for name, m in (("box in view", vis), ("box out of view", ~vis)):
        if m.sum() > 2:
            print(f"| Spearman, {name} ({int(m.sum())} frames) | {spearmanr(judged_a[m], real_a[m]).statistic:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
