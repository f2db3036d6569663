"""Does the planner choose the action that brings the agent closer? A one-step probe in the real twin.

    python examples/probe_action_choice.py --layout one_room --landmarks --episodes 8 --seed 200

The planner of the README's navigation rows imagines every canonical action once from the real
frame and scores the imagined frames (`--candidates <all> --horizon 1 --elites 1`, the judged
score by default). At every state it visits in `BagelNavigateReal-v0`, this probe also takes each
action in the real twin from a saved copy of the state (`get_state` / `set_state`), which gives
the true distance to the goal after it. The walk follows the planner, with a share `--explore` of
random actions so that it does not stay in one spot. Over all states it reports:

- the real change of distance (m; negative = closer) after the planner's action, after the
  average action (what a uniformly random agent gets in expectation) and after the best one;
- the planner's action minus the average one, per state (mean and standard error): below
  zero, the score helps choose; about zero, the planner is a random agent that costs compute;
- how often the planner's action is a best one (within 1 cm), against chance;
- the mean within-state Spearman between the planner's scores and the real closeness after
  each action (+1: the scores order the actions as the real outcomes do).

Each figure is given twice: for the planner's own pick (its score of the imagined next
frames), and for the pick the same score makes of the REAL next frames. If the second is much
better, the imagination is what fails; if both are poor, the score is. `--metric step` (the
judged closeness of each imagined step, asked in the session that took it) has no score of a
bare frame, so its second column is left empty.

Needs scipy (the `[eval]` extra brings it).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tqdm.auto import tqdm

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.agents import CEMPlanner
from bagel_world.envs.base import shared_simulator
from bagel_world.evaluate_agents import (
    add_landmarks_option,
    every_action_outcome,
    make_real_env,
    pick_figures,
    real_env_kwargs,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="world model (default: the shipped one)")
    p.add_argument("--layout", default=None, help="one_room, four_rooms (default) or maze")
    p.add_argument("--success", default=None, help="'pose' (default) or 'view': which distance is measured")
    add_landmarks_option(p)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=200, help="first seed (validation seeds by default)")
    p.add_argument("--max-steps", type=int, default=32, help="steps per episode")
    p.add_argument("--explore", type=float, default=0.25, help="share of random actions in the walk")
    p.add_argument("--metric", default="auto", help="the planner's score: auto (judged), judged, step, located, feature or "
                   "pixel (step judges steps taken in a session, so the real-outcome column is left out)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures and per-state records to this JSON file")
    a = p.parse_args(argv)
    if not 0.0 <= a.explore <= 1.0:
        p.error(f"--explore must be in [0, 1], got {a.explore}")
    torch.set_num_threads(a.threads)

    sim = shared_simulator(a.checkpoint)
    template = sim.tasks()["navigate"]
    env_kwargs = real_env_kwargs("navigate", a.layout, a.success, a.landmarks)
    env = make_real_env("navigate", template=template, max_steps=a.max_steps, **env_kwargs)
    key = "view_distance" if a.success == "view" else "goal_distance"
    n_act = len(template.canonical_actions)
    planner = CEMPlanner(simulator=sim, candidates=n_act, horizon=1, elites=1, metric=a.metric, progress=False)

    states: list[dict] = []
    for seed in tqdm(range(a.seed, a.seed + a.episodes), desc="probe episodes"):
        obs, info = env.reset(seed=seed)
        planner.reset(env, obs, info, seed=seed)
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            plan = planner.plan(obs)
            scores = np.empty(n_act)
            scores[plan.candidate_sequences[:, 0]] = plan.candidate_scores
            after, outcomes = every_action_outcome(env, key)  # each action from this same real state
            states.append({"seed": seed, "before": float(info[key]), "after": after, "scores": scores.tolist(),
                           "chosen": plan.action})
            if planner.resolved_metric != "step":
                real_scores = planner.score_frames(np.stack(outcomes), obs["goal"])
                states[-1].update(real_scores=real_scores.tolist(), chosen_on_real=int(np.argmax(real_scores)))
            act = int(rng.integers(n_act)) if rng.random() < a.explore else plan.action
            obs, _, terminated, truncated, info = env.step(act)
            done = terminated or truncated
    env.close()

    before = np.array([s["before"] for s in states])
    after = np.array([s["after"] for s in states])
    figures = {
        "checkpoint": a.checkpoint, "env_kwargs": env_kwargs, "metric": planner.resolved_metric,
        "seeds": [a.seed, a.seed + a.episodes - 1], "explore": a.explore,
        # the planner's pick (scores of the imagined next frames), and the pick the same score
        # makes on the real next frames: the gap between them is what imagination costs
        "imagined": pick_figures(before, after, [s["chosen"] for s in states], [s["scores"] for s in states]),
        "real_outcomes": None if "real_scores" not in states[0] else pick_figures(
            before, after, [s["chosen_on_real"] for s in states], [s["real_scores"] for s in states]),
    }
    f, im = figures, figures["imagined"]
    re = figures["real_outcomes"]

    def real(fmt: str, *keys: str) -> str:  # the real-outcome column, empty when the score has none
        return "–" if re is None else fmt.format(*(re[k] for k in keys))
    print(f"{im['states']} states, seeds {a.seed}-{a.seed + a.episodes - 1}, score: {f['metric']}")
    print("| | the planner (scores of imagined next frames) | the same score of the real next frames |")
    print("|---|---|---|")
    print(f"| real change of distance after its pick (m) | {im['delta_chosen']:+.3f} | {real('{:+.3f}', 'delta_chosen')} |")
    print(f"| pick - average action, per state (m) | {im['chosen_minus_average']:+.3f} ± {im['stderr']:.3f} | "
          f"{real('{:+.3f} ± {:.3f}', 'chosen_minus_average', 'stderr')} |")
    print(f"| pick is a best action (chance {im['chance_is_best']:.0%}) | {im['chosen_is_best']:.0%} | "
          f"{real('{:.0%}', 'chosen_is_best')} |")
    print(f"| within-state Spearman of scores with real closeness | {im['within_state_spearman']:+.2f} | "
          f"{real('{:+.2f}', 'within_state_spearman')} |")
    print(f"average action (random): {im['delta_average']:+.3f} m; best action: {im['delta_best']:+.3f} m")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({**figures, "per_state": states}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
