"""Does the progress judge rank the states of recorded episodes by their real distance?

`bagel-world eval-progress` asks the judge about new scripted walks; this probe asks it about
recorded episodes (`bagel-world record` shards with goals and poses), the kind of data the
judge is trained on, so a low figure here means the judge did not learn, not that new
episodes differ. For every second frame of the last `--episodes` episodes of `--shard`, it
judges the distance to the episode's goal image ("own") and to a random frame of the same
episode ("hindsight", as in training), and prints the Spearman correlation (scipy) with the
real distance between the poses.

    python examples/probe_judge_on_recordings.py --shard data/rec5/navigate/shard-00029.npz --episodes 8
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr

    from bagel_world.sims import pose_progress
    from bagel_world.simulator import make_simulator
    from bagel_world.simulator.progress import judge_frames
    from bagel_world.training.data import Shard

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="world model folder (default: the shipped one)")
    p.add_argument("--shard", required=True, help="a recorded shard with goals and poses")
    p.add_argument("--episodes", type=int, default=8, help="its last episodes to ask about")
    p.add_argument("--every", type=int, default=2, help="every n-th frame")
    p.add_argument("--seed", type=int, default=0, help="draws of the hindsight goals")
    a = p.parse_args(argv)
    s = Shard.load(a.shard)
    if not s.has_progress:
        raise SystemExit(f"{a.shard} has no goals and poses (record a task with a progress judge)")
    sim = make_simulator(a.checkpoint, device="cpu")
    rng = np.random.default_rng(a.seed)
    T1 = s.frames.shape[1]
    for kind in ("own", "hindsight"):
        frames, goals, real = [], [], []
        for e in range(max(0, s.num_episodes - a.episodes), s.num_episodes):
            for t in range(0, T1, a.every):
                if kind == "own":
                    goal, goal_pose = s.goals[e], s.goal_poses[e]
                else:
                    k = int(rng.integers(T1))
                    goal, goal_pose = s.frames[e, k], s.poses[e, k]
                frames.append(s.frames[e, t])
                goals.append(goal)
                real.append(pose_progress(s.task, s.poses[e, t], goal_pose)[0])
        judged = np.concatenate([judge_frames(sim, s.task, np.stack(frames[i : i + 32]), goals[i : i + 32],
                                              reached=False)[0] for i in range(0, len(frames), 32)])
        print(f"{kind:9s} goals: {len(judged)} frames, Spearman {spearmanr(judged, real).statistic:+.2f}; judged "
              f"{judged.min():.2f}-{judged.max():.2f}, real {min(real):.2f}-{max(real):.2f} {s.task} distance units")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
