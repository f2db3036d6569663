"""How far does the model's understanding path go as a navigation policy? A probe in the real twin.

    python examples/probe_vlm_policy.py --episodes 5 --seed 0

Walks the privileged scripted agent through `BagelNavigateReal-v0` on held-out seeds and,
at every visited state, asks the world model two things:

1. the state questions its understanding training covered (`bagel_world.sims.state_questions`:
   is the red box visible, on which side, is there a wall ahead, ...), scored exactly as
   trained (a session on the frame, then the question; `Simulator.score` over the answers
   the question allows). Reported: accuracy per question against the majority answer's rate.
2. the model-judged policy's choice (`ModelJudgedPolicy`: current view, goal view, "which
   action brings the view closer to the goal image?"). Reported: agreement with the scripted
   action (chance 1/6) and how often it picks its most frequent action.

Prints two markdown tables; `--out DIR` also writes probe.json.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import bagel_world  # noqa: F401  (registers the ids)
from bagel_world.agents import ModelJudgedPolicy, scripted_agent
from bagel_world.envs.base import shared_simulator
from bagel_world.evaluate_agents import make_real_env
from bagel_world.sims import state_questions

# The answers each navigation state question allows (the words `state_questions` produces).
ANSWERS = {
    "Is the red box on the left or the right?": ["left", "right", "ahead", "not visible"],
    "Which way should you turn to face the goal?": ["left", "right", "none"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="first held-out seed")
    p.add_argument("--max-steps", type=int, default=64)
    p.add_argument("--checkpoint", default=None, help="world model (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    sim = shared_simulator(a.checkpoint)
    template = sim.tasks()["navigate"]
    env = make_real_env("navigate", template=template, max_steps=a.max_steps)
    policy, guide = ModelJudgedPolicy(simulator=sim), scripted_agent("navigate")
    hits: dict[str, list[bool]] = collections.defaultdict(list)
    truths: dict[str, list[str]] = collections.defaultdict(list)
    picks, agree = [], []
    for seed in tqdm(range(a.seed, a.seed + a.episodes), desc="probe episodes"):
        obs, info = env.reset(seed=seed)
        guide.reset(env, obs, info, seed=seed)
        policy.reset(env, obs, info, seed=seed)
        while True:
            # 1. State questions, asked as in training: a session on the frame, then the question.
            sid = sim.open("navigate", [obs["frame"]])
            try:
                for q, truth in state_questions("navigate", info):
                    answers = ANSWERS.get(q, ["yes", "no"])
                    said = answers[int(np.argmax(sim.score([sid], q, answers)[0]))]
                    hits[q].append(said == truth)
                    truths[q].append(truth)
            finally:
                sim.close(sid)
            # 2. The model-judged policy against the privileged scripted action.
            want = guide.act(obs, info)
            got = policy.act(obs, info)
            picks.append(got)
            agree.append(got == want)
            obs, _, terminated, truncated, info = env.step(want)
            if terminated or truncated:
                break
    env.close()

    actions = list(template.canonical_actions)
    rows = []
    print("| state question (as trained) | model accuracy | majority answer rate | states |\n|---|---|---|---|")
    for q in hits:
        acc = float(np.mean(hits[q]))
        majority = collections.Counter(truths[q]).most_common(1)[0][1] / len(truths[q])
        rows.append({"question": q, "accuracy": acc, "majority": majority, "states": len(hits[q])})
        print(f"| {q} | {acc:.0%} | {majority:.0%} | {len(hits[q])} |")
    top, top_n = collections.Counter(picks).most_common(1)[0]
    summary = {"states": len(picks), "agreement_with_scripted": float(np.mean(agree)), "chance": 1 / len(actions),
               "most_frequent_pick": actions[top], "most_frequent_pick_rate": top_n / len(picks)}
    print("\n| model-judged policy | value |\n|---|---|")
    print(f"| agreement with the scripted action | {summary['agreement_with_scripted']:.0%} "
          f"(chance {summary['chance']:.0%}) |")
    print(f"| most frequent pick | {actions[top]!r} in {summary['most_frequent_pick_rate']:.0%} of states |")
    print(f"| states probed | {len(picks)} ({a.episodes} episodes, seeds {a.seed}..{a.seed + a.episodes - 1}) |")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.json").write_text(json.dumps({"questions": rows, "policy": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
