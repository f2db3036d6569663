"""How good must a one-step judge be? The one-step planner with the TRUE outcome of every action.

    python examples/probe_oracle_planner.py --layout one_room --landmarks --episodes 20 --seed 0

The README's one-step planner (`--candidates 6 --horizon 1 --elites 1`) scores the imagined next
frame of every canonical action and takes the best. This probe replaces the world model and its
judge with the truth: at every state of `BagelNavigateReal-v0` it takes each action from a saved
copy of the state (`get_state` / `set_state`) and scores it by minus the real distance to the goal
after it, plus `--reached-weight` if that action succeeds, plus Gaussian noise of standard
deviation `--noise` (m) drawn afresh for every action and state; ties are broken at random. It
then acts on the best score, as the planner does.

For each noise level it reports success, steps to goal and return over the episodes, and the
same pick figures as `probe_action_choice.py` (the pick's real change of distance minus the
average action's, per state; how often it is a best action), so that a judge measured there can
be placed on this scale. With no noise this is the ceiling of any one-step judge, and the noise
levels say how much independent error such a planner tolerates. A judge whose pick figures
match a noise level here but which succeeds far less often than it makes errors that are not
independent: it is wrong the same way in the same places.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm.auto import tqdm

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.evaluate_agents import (
    add_landmarks_option,
    every_action_outcome,
    make_real_env,
    pick_figures,
    real_env_kwargs,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", default="one_room", help="navigate layout: one_room, four_rooms or maze")
    p.add_argument("--success", default=None, help="'pose' (default) or 'view', as evaluate-agent")
    add_landmarks_option(p)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--max-steps", type=int, default=64, help="step limit per episode, as evaluate-agent")
    p.add_argument("--noise", default="0,0.2,0.5,1",
                   help="comma list of the noise levels (m): standard deviation of the error added to every score")
    p.add_argument("--reached-weight", type=float, default=1.0,
                   help="score bonus of an action that reaches the goal (0: the change of distance alone)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    a = p.parse_args(argv)
    try:
        noises = [float(x) for x in a.noise.split(",")]
    except ValueError:
        p.error(f"--noise must be a comma list of numbers, got {a.noise!r}")
    if any(not np.isfinite(x) or x < 0 for x in noises):
        p.error(f"--noise levels must be finite and >= 0, got {a.noise!r}")
    if a.episodes < 1 or a.max_steps < 1:
        p.error(f"--episodes and --max-steps must be >= 1, got {a.episodes} and {a.max_steps}")

    env_kwargs = real_env_kwargs("navigate", a.layout, a.success, a.landmarks)
    env = make_real_env("navigate", max_steps=a.max_steps, **env_kwargs)
    key = "view_distance" if a.success == "view" else "goal_distance"
    rows = []
    for noise in noises:
        successes, steps, returns, before, after, picks, scores = [], [], [], [], [], [], []
        for seed in tqdm(range(a.seed, a.seed + a.episodes), desc=f"noise {noise:g}", leave=False):
            rng = np.random.default_rng([seed, int(noise * 1000)])
            obs, info = env.reset(seed=seed)
            done, ret, t = False, 0.0, 0
            while not done:
                infos: list[dict] = []
                dist, _ = every_action_outcome(env, key, infos)
                score = -np.array(dist) + a.reached_weight * np.array([i["is_success"] for i in infos], float)
                score += noise * rng.standard_normal(len(score))
                act = int(rng.choice(np.flatnonzero(score >= score.max() - 1e-9)))
                before.append(float(info[key]))
                after.append(dist)
                picks.append(act)
                scores.append(score.tolist())
                obs, r, terminated, truncated, info = env.step(act)
                ret, t, done = ret + float(r), t + 1, terminated or truncated
            successes.append(bool(info["is_success"]))
            steps.append(t)
            returns.append(ret)
        f = pick_figures(np.array(before), np.array(after), picks, scores)
        ok = np.array(successes)
        rows.append({"noise": noise, "success": float(ok.mean()), "successes": int(ok.sum()), "episodes": len(ok),
                     "steps_to_goal": float(np.mean(np.array(steps)[ok])) if ok.any() else None,
                     "return": float(np.mean(returns)), "return_stderr": float(np.std(returns) / np.sqrt(len(returns))),
                     **f})
    env.close()

    print(f"seeds {a.seed}-{a.seed + a.episodes - 1}, {env_kwargs}, reached weight {a.reached_weight:g}")
    print("| noise (m) | success | steps to goal | return | pick - average action (m per step) | pick is a best action |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        stg = "–" if r["steps_to_goal"] is None else f"{r['steps_to_goal']:.1f}"
        print(f"| {r['noise']:g} | {r['successes']}/{r['episodes']} | {stg} | {r['return']:+.2f} ± {r['return_stderr']:.2f} "
              f"| {r['chosen_minus_average']:+.3f} ± {r['stderr']:.3f} | {r['chosen_is_best']:.0%} "
              f"(chance {r['chance_is_best']:.0%}) |")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"env_kwargs": env_kwargs, "seeds": [a.seed, a.seed + a.episodes - 1],
                       "reached_weight": a.reached_weight, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
