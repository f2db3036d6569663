"""Does the navigate goal image tell where the goal spot is?

In `BagelNavigateReal-v0` (goal="box") the goal is a pose 2-3 m from the red box, facing
it, and success means being within 0.5 m and 30 degrees of that pose. The goal image is
the view from the pose: the box in the middle, and behind it whatever walls the pose looks
at. Every pose on the circle around the box at the same distance, facing the box, shows
the box the same way; only the background differs. So an agent that reads the goal image
perfectly can still only succeed if the background tells the poses on that circle apart.

For each seed this probe renders the real view from poses around the circle (every 5
degrees, free poses only) and compares each with the goal image in pixel RMSE, the
planner's pixel metric, and again after 8x8 mean pooling (the checkered floor makes raw
pixels differ a lot between poses 0.25 m apart; pooling keeps the walls and the box and
drops the checkers). It reports:

- `confusable`: the share of goals for which some view from a pose *outside* the success
  region (over 0.5 m from the goal spot) is at least as close to the goal image as a view
  from a pose *inside* it 0.25 m from the goal spot (a perfect pixel matcher could be
  fooled);
- the success rate of an agent that matches the box's size and position in the view
  perfectly but ignores the background: it walks to the nearest pose on the circle;
- the arc of the circle that counts as success, as a share of the free arc.

`--landmarks` asks the same of the room with a coloured panel on each wall
(`BagelNavigateReal-v0(landmarks=True)`).

    python examples/probe_goal_identifiable.py --layout one_room --episodes 40 --seed 0
    python examples/probe_goal_identifiable.py --layout one_room --episodes 40 --seed 0 --landmarks
"""

from __future__ import annotations

import argparse
import math

import numpy as np

ARC_STEP_DEG = 5.0


def _rmse(a: np.ndarray, b: np.ndarray, pool: int = 1) -> float:
    """Pixel RMSE (0-255) of two (H, W, 3) frames after `pool` x `pool` mean pooling."""
    def pooled(x: np.ndarray) -> np.ndarray:
        H, W, C = x.shape
        return x.astype(np.float64).reshape(H // pool, pool, W // pool, pool, C).mean((1, 3))

    return float(np.sqrt(np.mean((pooled(a) - pooled(b)) ** 2)))


def circle_views(env, seed: int) -> dict:
    """Views from free poses on the goal's circle around the box, and where each pose is."""
    from bagel_world.sims.navigate import pose_facing

    obs, info = env.reset(seed=seed)
    sim = env.unwrapped
    world, agent = sim.world, sim.world.agent
    box = np.asarray(world.box.pos, np.float64)
    goal_pos = np.array([info["goal_pos"][0], 0.0, info["goal_pos"][1]])
    radius = float(np.hypot(*(goal_pos - box)[[0, 2]]))
    poses, views = [], []
    for deg in np.arange(0.0, 360.0, ARC_STEP_DEG):
        pos, yaw = pose_facing(box, radius, math.radians(deg))
        if not any(r.point_inside(pos) for r in world.rooms) or world.intersect(agent, pos, agent.radius):
            continue
        views.append(sim.render_from(pos, yaw))
        poses.append(pos[[0, 2]])
    # the agent that reads only the box: the nearest pose on the circle from its start
    s = agent.pos[[0, 2]] - box[[0, 2]]
    nearest = box[[0, 2]] + radius * s / max(float(np.hypot(*s)), 1e-9)
    return {"goal": obs["goal"], "goal_pos": goal_pos[[0, 2]], "poses": np.asarray(poses),
            "views": np.asarray(views), "radius": radius, "nearest": nearest}


def near_goal_view(env, c: dict, offset: float = 0.25) -> np.ndarray:
    """The view from a pose on the circle `offset` m along it from the goal spot, facing the box."""
    from bagel_world.sims.navigate import pose_facing

    sim = env.unwrapped
    box = np.asarray(sim.world.box.pos, np.float64)
    g = c["goal_pos"] - box[[0, 2]]
    return sim.render_from(*pose_facing(box, c["radius"], math.atan2(-g[1], g[0]) + offset / c["radius"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", default="one_room")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--radius", type=float, default=0.5, help="the env's success radius (m)")
    p.add_argument("--landmarks", action="store_true", help="a coloured panel on each wall (one_room)")
    a = p.parse_args(argv)
    import gymnasium as gym

    import bagel_world.sims  # noqa: F401  (registers the real twins)

    env = gym.make("BagelNavigateReal-v0", layout=a.layout, landmarks=a.landmarks)
    pools = (1, 8)
    confusable: dict[int, list[bool]] = {k: [] for k in pools}
    box_only, arc_share = [], []
    for seed in range(a.seed, a.seed + a.episodes):
        c = circle_views(env, seed)
        inside = np.hypot(*(c["poses"] - c["goal_pos"]).T) <= a.radius
        near = near_goal_view(env, c)
        for k in pools:
            ref = _rmse(near, c["goal"], k)
            outside = [_rmse(v, c["goal"], k) for v, ins in zip(c["views"], inside) if not ins]
            confusable[k].append(bool(outside) and min(outside) <= ref)
        box_only.append(float(np.hypot(*(c["nearest"] - c["goal_pos"]))) <= a.radius)
        arc_share.append(inside.mean() if len(inside) else 0.0)
    env.close()
    n = len(box_only)
    where = a.layout + (" with landmarks" if a.landmarks else "")
    print(f"{where}, seeds {a.seed}-{a.seed + n - 1}: goal pose 2-3 m from the box, success within {a.radius} m")
    for k in pools:
        how = "raw pixels" if k == 1 else f"{k}x{k} mean-pooled"
        print(f"confusable goals, {how} (a view from outside the success region is as close to the goal image "
              f"as the view 0.25 m from the goal spot): {np.mean(confusable[k]):.2f} ({sum(confusable[k])}/{n})")
    print(f"agent that matches the box perfectly and ignores the background: success {np.mean(box_only):.2f} "
          f"({sum(box_only)}/{n})")
    print(f"share of the free circle that counts as success: mean {np.mean(arc_share):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
