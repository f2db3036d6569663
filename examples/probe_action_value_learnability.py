"""Can the recordings teach which action gets closer to the goal? A plain CNN, one step ahead.

The one-step planner picks the action whose imagined next frame the progress judge scores
closest to the goal, and `probe_action_choice.py` measures how much better than the average
action that pick is in the real twin. This probe asks whether a different question, one that
names the action, is easier to learn from the same recordings: "how much closer does <action>
bring me?" It trains the small CNN of `probe_judge_learnability.py` on the current frame and
the goal image (stacked as 6 channels) as a regressor with one output per canonical action,
fitted on the action each recorded step took (its real change of distance to the goal pose,
from the recorded poses), and reports its error on the recorded episodes that `bagel-world
train` holds out too, so that memorising the training episodes shows.

It is then scored exactly as `probe_action_choice.py` scores the planner: on a walk through
the real twin (held-out seeds; the CNN's greedy pick, with a share of random actions), every
action is also taken from a saved copy of each state, and the CNN's pick is compared with
the average and the best action. A pick much closer than the average says this question
carries the signal the one-step planner lacks, and is worth teaching the world model's
understanding path.

    python examples/probe_action_value_learnability.py --data data/rec6 --layout one_room --landmarks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_judge_learnability import PairNet, stack  # noqa: E402  (the same CNN and input, one output per action)

Steps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # frames, goals, action index, change of distance


def recorded_steps(data: str, actions: tuple[str, ...]) -> tuple[Steps, Steps]:
    """Every recorded navigate step that took a canonical action, of the training episodes and
    of the held-out ones (as `bagel-world train` splits them), from one read of the shards:
    each as (frames, goals, action index, real change of distance to the goal pose)."""
    from bagel_world.training.pipeline import load_training_shards

    train, held = load_training_shards(Path(data), holdout=8)
    return steps_of(train, actions, data), steps_of([held["navigate"]] if "navigate" in held else [], actions, data)


def steps_of(shards: list, actions: tuple[str, ...], data: str) -> Steps:
    """The canonical-action steps of these shards (`data` names their folder in the error)."""
    from bagel_world.sims import pose_progress

    shards = [s for s in shards if s.task == "navigate" and s.has_progress]
    if not shards:
        raise SystemExit(f"no navigate recordings with progress poses under {data}")
    frames, goals, acts, deltas = [], [], [], []
    for s in shards:
        for e in range(s.frames.shape[0]):
            dist = [pose_progress("navigate", p, s.goal_poses[e], "pose", True)[0] for p in s.poses[e]]
            for t, text in enumerate(s.actions[e]):
                if str(text) not in actions:  # a varied magnitude ("turn left 45 degrees"): not a canonical action
                    continue
                frames.append(s.frames[e, t])
                goals.append(s.goals[e])
                acts.append(actions.index(str(text)))
                deltas.append(dist[t + 1] - dist[t])
    return np.stack(frames), np.stack(goals), np.asarray(acts), np.asarray(deltas, np.float32)


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    import bagel_world  # noqa: F401  (registers the ids)
    from bagel_world.evaluate_agents import (
        add_landmarks_option,
        every_action_outcome,
        make_real_env,
        pick_figures,
        real_env_kwargs,
    )
    from bagel_world.simulator.tasks import default_templates

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="navigate recordings (bagel-world record) with progress poses")
    p.add_argument("--layout", default="one_room")
    add_landmarks_option(p)
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--episodes", type=int, default=8, help="real walks to score")
    p.add_argument("--seed", type=int, default=200, help="first walk seed (validation seeds by default)")
    p.add_argument("--max-steps", type=int, default=32, help="steps per walk")
    p.add_argument("--explore", type=float, default=0.25, help="share of random actions in the walk")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    template = default_templates(large=False)["navigate"]
    actions = tuple(template.canonical_actions)

    # 1. Fit the taken action's real change of distance.
    (frames, goals, acts, deltas), (h_frames, h_goals, h_acts, h_deltas) = recorded_steps(a.data, actions)
    a_all, y_all = torch.from_numpy(acts), torch.from_numpy(deltas)
    net = PairNet(len(actions))  # (B, actions): the predicted change of distance after each
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(1)
    losses = []
    for _ in tqdm(range(a.steps), desc="train action-value CNN"):
        idx = rng.integers(0, len(y_all), a.batch_size)
        pred = net(stack(frames[idx], goals[idx])).gather(1, a_all[idx, None])[:, 0]
        loss = nn.functional.mse_loss(pred, y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # what predicting each action's mean change (ignoring both images) leaves
    per_action_mean = np.array([deltas[acts == i].mean() if (acts == i).any() else 0.0 for i in range(len(actions))])
    baseline_mse = float(((deltas - per_action_mean[acts]) ** 2).mean())
    net.eval()
    with torch.no_grad():
        h_pred = torch.cat([net(stack(h_frames[i:i + 256], h_goals[i:i + 256])) for i in range(0, len(h_acts), 256)])
    held_mse = float(((h_pred[np.arange(len(h_acts)), h_acts].numpy() - h_deltas) ** 2).mean())
    held_baseline = float(((h_deltas - per_action_mean[h_acts]) ** 2).mean())

    # 2. Score its greedy pick in the real twin, every action tried from each state.
    env_kwargs = real_env_kwargs("navigate", a.layout, None, a.landmarks)
    env = make_real_env("navigate", template=template, max_steps=a.max_steps, **env_kwargs)
    before, after, chosen, scores = [], [], [], []
    for seed in tqdm(range(a.seed, a.seed + a.episodes), desc="score walks"):
        obs, info = env.reset(seed=seed)
        walk_rng = np.random.default_rng(seed)
        done = False
        while not done:
            with torch.no_grad():
                q = net(stack(obs["frame"][None], obs["goal"][None]))[0].numpy()  # predicted change per action
            before.append(float(info["goal_distance"]))
            after.append(every_action_outcome(env, "goal_distance")[0])
            chosen.append(int(np.argmin(q)))
            scores.append(-q)
            act = int(walk_rng.integers(len(actions))) if walk_rng.random() < a.explore else chosen[-1]
            obs, _, terminated, truncated, info = env.step(act)
            done = terminated or truncated
    env.close()
    picks = pick_figures(np.asarray(before), np.asarray(after), chosen, scores)
    f = {
        "data": a.data, "env_kwargs": env_kwargs, "training_steps": int(len(deltas)),
        "mse_last100": float(np.mean(losses[-100:])), "mse_per_action_mean": baseline_mse,
        "held_out_steps": int(len(h_deltas)), "held_out_mse": held_mse, "held_out_mse_per_action_mean": held_baseline,
        "seeds": [a.seed, a.seed + a.episodes - 1], "explore": a.explore, **picks,
    }
    print(f"| recorded steps | {f['training_steps']} from {a.data} |")
    print(f"| MSE, last 100 steps / each action's mean change | {f['mse_last100']:.4f} / {baseline_mse:.4f} |")
    print(f"| MSE on the {f['held_out_steps']} held-out recorded steps / each action's mean change | "
          f"{held_mse:.4f} / {held_baseline:.4f} |")
    print(f"| states scored, seeds {a.seed}-{a.seed + a.episodes - 1} | {f['states']} |")
    print(f"| real change of distance: CNN's pick / average / best action (m) | {f['delta_chosen']:+.3f} / "
          f"{f['delta_average']:+.3f} / {f['delta_best']:+.3f} |")
    print(f"| pick - average, per state (m) | {f['chosen_minus_average']:+.3f} ± {f['stderr']:.3f} |")
    print(f"| pick is a best action / chance | {f['chosen_is_best']:.0%} / {f['chance_is_best']:.0%} |")
    print(f"| within-state Spearman with real closeness | {f['within_state_spearman']:+.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps(f, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
