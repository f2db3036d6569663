"""How well could a judge that sees one frame (or a few) and the goal image rank navigate distances?

The progress judge (`bagel_world.simulator.progress`) is asked about one frame and the goal
image. In navigate the goal image is the view from a spot 2-3 m from the red box, facing it,
so it shows the box in the middle of the frame whatever side the goal spot is on, and the
walls are one uniform grey. Where the current frame does not show the box, little in the
two images tells how far the goal spot is.

This probe bounds what such a judge can reach. It walks real episodes the way
`bagel-world eval-progress` does (the scripted agent with a share of random actions), keeps
for every frame what a perfect reader of that frame could know about the box and the walls
(`box_visible`, `box_distance` and `box_bearing_deg` when visible, and the three wall
clearances), and fits k-nearest-neighbour regression of the real distance to the goal on
those features, scored on other seeds (leave-seeds-out folds). Its Spearman correlation
(scipy) with the real distance is an estimate of the best a single-frame judge can do; the
same for the frames that show the box, and the share of frames that do not. `--history N`
adds the features of the N frames before each one (a judge that sees the session's history).
`--success view` walks and scores by the view rule (`BagelNavigateReal-v0(success="view")`):
the distance is to the circle around the box the goal view is taken on, and the features add
what the goal image shows (the box's distance from the goal spot, which its size tells).

    python examples/probe_judge_ceiling.py --layout one_room --episodes 40
    python examples/probe_judge_ceiling.py --layout one_room --episodes 40 --success view
"""

from __future__ import annotations

import argparse

import numpy as np

FEATURES = ("box_visible", "box_distance", "box_bearing_deg", "clearance_ahead_m", "clearance_left_m",
            "clearance_right_m")


def _features(info: dict) -> list[float]:
    """What a perfect reader of the frame knows about the box and the walls (`FEATURES`)."""
    visible = bool(info["box_visible"])
    return [float(visible), info["box_distance"] if visible else 0.0, info["box_bearing_deg"] if visible else 0.0,
            info["clearance_ahead_m"], info["clearance_left_m"], info["clearance_right_m"]]


def walk_features(layout: str, seed: int, steps: int, explore: float, success: str = "pose"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(features (T+1, F), real distance to the goal (T+1,)) of one real episode, walked as
    `bagel-world eval-progress` walks it, under the success rule `success`."""
    from bagel_world.evaluate_progress import walk

    _, _, dist, _, _, infos = walk("navigate", seed, steps, explore, layout, success)
    goal_side = [[i["goal_box_distance"]] if success == "view" else [] for i in infos]  # what the goal image shows
    return np.asarray([_features(i) + g for i, g in zip(infos, goal_side)], np.float64), dist.astype(np.float64)


def with_history(x: np.ndarray, n: int) -> np.ndarray:
    """(T, F * (n + 1)): each row's features, then those of the n frames before it (the first
    frame repeated before the episode starts), as a judge that also saw the last n frames."""
    idx = np.maximum(np.arange(len(x))[:, None] - np.arange(n + 1)[None, :], 0)
    return x[idx].reshape(len(x), -1)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Mean target of the k nearest training rows (features standardised on the training rows)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    a, b = (train_x - mu) / sd, (x - mu) / sd
    d = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    idx = np.argpartition(d, min(k, len(a) - 1), axis=1)[:, :k]
    return train_y[idx].mean(1)


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", default="one_room", help="navigate layout")
    p.add_argument("--episodes", type=int, default=40, help="real episodes (seeds SEED..SEED+N-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=40, help="steps per episode, as eval-progress")
    p.add_argument("--explore", type=float, default=0.3, help="share of random actions, as eval-progress")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--k", type=int, default=15, help="neighbours")
    p.add_argument("--history", type=int, default=0,
                   help="also give the features of the last N frames (a judge that sees the session's history)")
    p.add_argument("--success", default="pose", choices=["pose", "view"],
                   help="the success rule the distance is measured by (BagelNavigateReal-v0's success option)")
    a = p.parse_args(argv)
    if a.episodes < a.folds or a.folds < 2:
        raise SystemExit(f"need --folds >= 2 and --episodes >= --folds, got {a.folds}, {a.episodes}")
    if a.history < 0:
        raise SystemExit(f"--history must be >= 0, got {a.history}")
    eps = [walk_features(a.layout, a.seed + i, a.steps, a.explore, a.success) for i in range(a.episodes)]
    eps = [(with_history(x, a.history), y) for x, y in eps]
    fold_of = np.arange(a.episodes) % a.folds
    pred, real, visible = [], [], []
    for f in range(a.folds):
        tr = [e for i, e in enumerate(eps) if fold_of[i] != f]
        te = [e for i, e in enumerate(eps) if fold_of[i] == f]
        tx, ty = np.concatenate([e[0] for e in tr]), np.concatenate([e[1] for e in tr])
        for x, y in te:
            pred.append(knn_predict(tx, ty, x, a.k))
            real.append(y)
            visible.append(x[:, 0] > 0)
    pred, real, visible = np.concatenate(pred), np.concatenate(real), np.concatenate(visible)

    def share(mask: np.ndarray) -> str:
        return f"{mask.mean():.0%}" if len(mask) else "n/a"

    def mean(v: np.ndarray) -> str:
        return f"{v.mean():.2f} m" if len(v) else "n/a"

    def rho(m: np.ndarray) -> str:
        return f"{spearmanr(pred[m], real[m]).statistic:+.2f}" if m.sum() > 2 else "n/a"

    near = real < 1.0
    print(f"navigate {a.layout}, success={a.success}: {len(real)} frames of {a.episodes} episodes; box not visible in "
          f"{share(~visible)} of them; mean real distance to the goal {mean(real[visible])} where the box shows, "
          f"{mean(real[~visible])} where it does not; within 1 m of the goal spot the box shows in "
          f"{share(visible[near])} of {int(near.sum())} frames")
    every = np.ones_like(visible)
    seen = "the frame shows" if a.history == 0 else f"the frame and the {a.history} before it show"
    print(f"{'single-frame' if a.history == 0 else 'with-history'} estimate (kNN on what {seen}, fitted on "
          f"other seeds): Spearman with the real "
          f"distance {rho(every)} (all frames), {rho(visible)} (frames showing the box), {rho(~visible)} "
          f"(frames without it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
