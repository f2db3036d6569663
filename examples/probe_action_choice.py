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

Needs scipy (the `[eval]` extra brings it).
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import torch
from scipy.stats import ConstantInputWarning, spearmanr
from tqdm.auto import tqdm

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.agents import CEMPlanner
from bagel_world.envs.base import shared_simulator
from bagel_world.evaluate_agents import add_landmarks_option, make_real_env, real_env_kwargs


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
    p.add_argument("--metric", default="auto", help="the planner's score: auto (judged), judged, feature or pixel")
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
    base = env.unwrapped
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
            saved, before = base.get_state(), float(info[key])
            after = []
            for i in range(n_act):  # each action from the same real state
                base.set_state(saved)
                after.append(float(base.step(i)[4][key]))
            base.set_state(saved)
            states.append({"seed": seed, "before": before, "after": after, "scores": scores.tolist(),
                           "chosen": plan.action})
            act = int(rng.integers(n_act)) if rng.random() < a.explore else plan.action
            obs, _, terminated, truncated, info = env.step(act)
            done = terminated or truncated
    env.close()

    before = np.array([s["before"] for s in states])
    after = np.array([s["after"] for s in states])
    delta = after - before[:, None]  # (S, A) real change of distance per action
    chosen = delta[np.arange(len(states)), [s["chosen"] for s in states]]
    gap = chosen - delta.mean(1)
    best = delta <= delta.min(1, keepdims=True) + 0.01
    is_best = best[np.arange(len(states)), [s["chosen"] for s in states]]
    with warnings.catch_warnings():  # states where every action ends equally far (e.g. against a wall)
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = np.array([spearmanr(s["scores"], -np.asarray(s["after"])).statistic for s in states])
    figures = {
        "checkpoint": a.checkpoint, "env_kwargs": env_kwargs, "metric": "judged" if a.metric == "auto" else a.metric,
        "seeds": [a.seed, a.seed + a.episodes - 1], "states": len(states), "explore": a.explore,
        "delta_chosen_m": float(chosen.mean()), "delta_average_m": float(delta.mean()),
        "delta_best_m": float(delta.min(1).mean()), "chosen_minus_average_m": float(gap.mean()),
        "chosen_minus_average_stderr_m": float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else float("nan"),
        "chosen_is_best": float(is_best.mean()), "chance_is_best": float(best.mean()),
        "within_state_spearman": float(np.nanmean(rho)), "ranked_states": int(np.isfinite(rho).sum()),
    }
    f = figures
    print(f"{f['states']} states, seeds {a.seed}-{a.seed + a.episodes - 1}, score: {f['metric']}")
    print("| real change of distance after | m per step |")
    print("|---|---|")
    print(f"| the planner's action | {f['delta_chosen_m']:+.3f} |")
    print(f"| the average action (random) | {f['delta_average_m']:+.3f} |")
    print(f"| the best action | {f['delta_best_m']:+.3f} |")
    print(f"planner - average, per state: {f['chosen_minus_average_m']:+.3f} ± {f['chosen_minus_average_stderr_m']:.3f} m")
    print(f"planner's action is a best one: {f['chosen_is_best']:.0%} of states (chance {f['chance_is_best']:.0%})")
    print(f"within-state Spearman of scores with real closeness: {f['within_state_spearman']:+.2f} "
          f"({f['ranked_states']} states where the actions' outcomes differ)")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({**figures, "per_state": states}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
