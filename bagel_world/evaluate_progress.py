"""`bagel-world eval-progress`: how well the model judges progress toward a goal image.

On held-out seeds of a real twin, episodes are walked by the privileged scripted agent with
a share `explore` of uniformly random canonical actions (so frames range from far away to
the goal itself, from every heading). For each frame the model is asked the two progress
questions of `bagel_world.simulator.progress`, with the episode's goal image in context:

- **Spearman** (scipy) between the judged expected distance and the real distance to the
  goal (`info["goal_distance"]`; with `success="view"`, `info["view_distance"]`, the
  distance to the circle around the red box the goal view is taken on), on real frames and
  on frames imagined `ahead` steps from a real frame with the actions the real episode took
  next (compared with the real distance at that later step);
- **AUROC** of P("yes") to "Have you reached the goal view?" against the real env's
  success (`info["is_success"]`), on real frames: the Mann-Whitney U statistic divided by
  (positives x negatives), from scipy.

`judge="located"` asks the location questions instead (`judge_location_frames`: where each
frame and the goal image were taken) and uses the distance between the two judged places as
the judged distance, and minus the judged pose distance (metres plus `yaw_weight` metres per 180
degrees of heading) as the "reached" score; it also reports how far each real frame's judged
place is from the real one (median metres and degrees), and how far the goal image's judged place
is from the goal pose (median metres and degrees over the episodes, and the share of goals placed
more than 0.5 m off, the pose rule's radius): a located planner heads for that judged place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from bagel_world.simulator.progress import LOCATED_YAW_WEIGHT

log = logging.getLogger(__name__)


def imagine_ahead(sim, task: str, starts: Sequence[np.ndarray], actions: Sequence[Sequence[str]], seed: int
                  ) -> list[np.ndarray]:
    """The frame imagined after each start frame's action sequence (equal lengths), one batch per step."""
    sids = [sim.open(task, [f]) for f in starts]
    try:
        for k in range(len(actions[0])):
            outs = sim.step(sids, [a[k] for a in actions], [seed + 1000 * i + k for i in range(len(sids))])
        return [o.frame for o in outs]
    finally:
        for s in sids:
            sim.close(s)


def walk(task: str, seed: int, steps: int, explore: float, layout: str | None = None, success: str | None = None,
         landmarks: bool = False):
    """One real episode: frames (T+1), actions (T), real distances and successes (T+1), goal,
    and the env's info dict of every frame (T+1). `success` is the real env's success rule
    (navigate: "pose", the default, or "view"); the distances are those its reward measures.
    `landmarks`: navigate's coloured wall panels (one_room)."""
    import gymnasium as gym

    from bagel_world.agents.scripted import scripted_agent
    from bagel_world.evaluate_agents import real_env_kwargs
    from bagel_world.sims import REAL_ENVS
    from bagel_world.simulator.tasks import CANONICAL_ACTIONS

    kwargs = real_env_kwargs(task, layout, success, landmarks)
    key = "view_distance" if success == "view" else "goal_distance"
    env = gym.make(REAL_ENVS[task][0], max_episode_steps=None, **kwargs)
    try:
        rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed)
        agent = scripted_agent(task)
        agent.reset(env, obs, info, seed)
        frames, actions, infos = [obs["frame"]], [], [info]
        dist, reached = [info[key]], [info["is_success"]]
        canon = CANONICAL_ACTIONS[task]
        for _ in range(steps):
            a = canon[int(rng.integers(len(canon)))] if rng.random() < explore else agent.choose(info)
            obs, _, terminated, _, info = env.step(a)
            frames.append(obs["frame"])
            actions.append(a)
            infos.append(info)
            dist.append(info[key])
            reached.append(info["is_success"])
            if terminated:
                break
        return np.stack(frames), actions, np.array(dist), np.array(reached, bool), obs["goal"], infos
    finally:
        env.close()


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for boolean `labels` (nan without both classes)."""
    from scipy.stats import mannwhitneyu

    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(mannwhitneyu(pos, neg, alternative="two-sided").statistic / (len(pos) * len(neg)))


def evaluate_progress(sim, task: str = "navigate", seeds: Sequence[int] = range(8), steps: int = 40,
                      explore: float = 0.3, ahead: int = 4, layout: str | None = None, success: str | None = None,
                      landmarks: bool = False, judge: str = "distance", yaw_weight: float = LOCATED_YAW_WEIGHT,
                      progress: bool = True) -> dict:
    """Spearman and AUROC of the model's progress judgements on real episodes (see the module doc)."""
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm

    from bagel_world.sims import progress_poses
    from bagel_world.simulator.progress import (
        DISTANCE_BINS,
        LOCATION_BINS,
        judge_frames,
        judge_location_frames,
        located_distance,
        pose_distance,
    )

    if judge not in ("distance", "located"):
        raise ValueError(f"judge must be 'distance' or 'located', got {judge!r}")
    judges = DISTANCE_BINS if judge == "distance" else LOCATION_BINS
    if task not in judges:
        raise ValueError(f"task {task!r} has no {'progress' if judge == 'distance' else 'location'} judge; "
                         f"tasks with one: {sorted(judges)}")
    if judge == "located" and (layout or "") != LOCATION_BINS[task].layout:
        raise ValueError(f"the location judge's bins are for layout {LOCATION_BINS[task].layout!r}, not {layout!r}")
    if not seeds:
        raise ValueError("seeds must not be empty")
    if ahead < 1 or steps < ahead:
        raise ValueError(f"need 1 <= ahead <= steps, got ahead={ahead}, steps={steps}")
    real_d, judged_d, reached, p_reached, ahead_real, ahead_judged = [], [], [], [], [], []
    place_err, yaw_err, goal_err, goal_yaw_err = [], [], [], []

    def judged(frames, goal, goal_place, reached=True):
        """(judged distance, "reached" score or None, judged places or None) of each frame."""
        if judge == "distance":
            return (*judge_frames(sim, task, frames, [goal] * len(frames), reached=reached), None)
        place = judge_location_frames(sim, task, frames)
        d, yaw = located_distance(place, goal_place)
        return d, -pose_distance(d, yaw, yaw_weight), place

    for seed in tqdm(list(seeds), desc=f"eval-progress {task}", disable=not progress):
        frames, actions, dist, ok, goal, infos = walk(task, seed, steps, explore, layout, success, landmarks)
        goal_place = judge_location_frames(sim, task, [goal])[0] if judge == "located" else None
        d, p, place = judged(frames, goal, goal_place)
        if place is not None:  # the location judge's own errors, on the goal image and on every frame
            e, ye = located_distance(goal_place, progress_poses(task, infos[0])[1])
            goal_err.append(float(e))
            goal_yaw_err.append(float(ye))
            real = np.stack([progress_poses(task, i)[0] for i in infos])
            e, ye = located_distance(place, real)
            place_err += list(e)
            yaw_err += list(ye)
        real_d += list(dist)
        judged_d += list(d)
        reached += list(ok)
        p_reached += list(p)
        starts = list(range(0, len(actions) - ahead + 1, 2))
        if starts:
            imagined = imagine_ahead(sim, task, [frames[t] for t in starts], [actions[t : t + ahead] for t in starts], seed)
            d_ahead = judged(imagined, goal, goal_place, reached=False)[0]
            ahead_real += [dist[t + ahead] for t in starts]
            ahead_judged += list(d_ahead)
    real_d, judged_d = np.asarray(real_d), np.asarray(judged_d)
    reached, p_reached = np.asarray(reached, bool), np.asarray(p_reached)
    return {
        "task": task, "success": success or "pose", "landmarks": landmarks, "seeds": [int(s) for s in seeds],
        "frames": int(len(real_d)),
        "spearman_real": float(spearmanr(judged_d, real_d).statistic),
        "spearman_imagined": float(spearmanr(ahead_judged, ahead_real).statistic) if ahead_judged else float("nan"),
        "imagined_pairs": len(ahead_judged), "ahead": ahead,
        "auroc_reached": auroc(p_reached, reached), "reached_frames": int(reached.sum()),
        "real_distance_range": [float(real_d.min()), float(real_d.max())],
        "judge": judge,
        **({"median_place_error_m": float(np.median(place_err)), "median_heading_error_deg": float(np.median(yaw_err)),
            "median_goal_place_error_m": float(np.median(goal_err)),
            "median_goal_heading_error_deg": float(np.median(goal_yaw_err)),
            "goals_placed_over_0_5m": float(np.mean(np.asarray(goal_err) > 0.5))}
           if place_err else {}),
    }
