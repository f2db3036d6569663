"""Does the model know what each action does, even where its imagined frames do not show it?

`bagel-world eval` scores controllability on *generated* frames: from one real state every
canonical action is imagined, and the imagined frame must be nearest (pixel MSE) to the real
outcome of the same action. This probe asks the conditional model instead, teacher-forced:
from recorded states with the real outcome of every action (`bagel-world record --branches`),
it puts each real outcome j after the state with each action text k, and computes the
flow-matching error of predicting that outcome (at a few noise levels, with the same noise
for every k). The action whose text explains outcome j best is the argmin over k. Its
accuracy is an inverse-dynamics score of the conditional model: high here while the
generated frames score low means the model tells the actions apart but cannot render their
outcome (a blurred or wrong frame), rather than ignoring the action.

    bagel-world record --task navigate --out data/probe --episodes 24 --steps 32 --seed 9000 \\
        --uniform 0.5 --branches 4                       # seeds that training never saw
    python examples/probe_action_likelihood.py --data data/probe --task navigate --states 40
"""

from __future__ import annotations

import argparse

import numpy as np


def action_confusion(trainer, branches, states: int, context: int, timesteps: list[float]) -> np.ndarray:
    """(K, K) counts: row j, the real outcome of action j; column k, the action whose text gave
    that outcome the smallest flow error summed over `timesteps`."""
    from bagel_world.training.data import Clip

    K = len(branches.actions)
    conf = np.zeros((K, K), np.int64)
    for n in range(min(states, branches.num_points)):
        frames = branches.context[n, -context:]
        prefix = [str(a) for a in branches.context_actions[n]][len(branches.context_actions[n]) - (context - 1):]
        clips = [Clip(branches.task, np.concatenate([frames, branches.outcomes[n, j][None]]),
                      prefix + [str(branches.actions[k])], None, None, (0, n, 0))
                 for j in range(K) for k in range(K)]
        err = sum(trainer.frame_flow_errors(clips, t, seed=n)[:, -1] for t in timesteps).reshape(K, K)
        for j in range(K):
            conf[j, int(np.argmin(err[j]))] += 1
    return conf


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import AutoTokenizer

    from bagel_world.inference.load import load_bagel
    from bagel_world.simulator import default_checkpoint
    from bagel_world.training.data import Branches, list_branches
    from bagel_world.training.pipeline import TASK_PROMPTS
    from bagel_world.training.world import WorldTrainArgs, WorldTrainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="default: the shipped bagel-world-small")
    p.add_argument("--data", required=True, help="a `bagel-world record --branches` folder (unseen seeds)")
    p.add_argument("--task", default="navigate")
    p.add_argument("--states", type=int, default=40, help="recorded states to probe")
    p.add_argument("--context", default="1,4", help="context frames before the outcome, comma list")
    p.add_argument("--timesteps", default="0.5,0.8,0.95", help="noise levels whose errors are summed")
    a = p.parse_args(argv)
    files = list_branches(a.data, a.task)
    if not files:
        raise SystemExit(f"no branch recordings of task {a.task!r} under {a.data!r}; record them with --branches")
    branches = Branches.load(files[0])
    contexts = [int(c) for c in a.context.split(",")]
    if any(not 1 <= c <= branches.context.shape[1] for c in contexts):
        raise SystemExit(f"--context values must be in [1, {branches.context.shape[1]}], got {a.context!r}")
    folder = a.checkpoint or str(default_checkpoint())
    eng = load_bagel(folder, device="cpu", dtype=torch.float32)
    trainer = WorldTrainer(eng.config, eng.model.eval(), eng.vae, AutoTokenizer.from_pretrained(folder),
                           WorldTrainArgs(task_prompts=TASK_PROMPTS, bf16=False))
    timesteps = [float(t) for t in a.timesteps.split(",")]
    names = [str(x) for x in branches.actions]
    for c in contexts:
        conf = action_confusion(trainer, branches, a.states, c, timesteps)
        print(f"{a.task}, {c} context frame(s), {conf.sum()} outcomes of {min(a.states, branches.num_points)} states: "
              f"the outcome's own action explains it best in {np.trace(conf) / conf.sum():.2f} "
              f"(chance {1 / len(names):.2f})")
        width = max(len(n) for n in names)
        for n, row in zip(names, conf):
            print(f"  outcome of {n:<{width}}  best action counts {row.tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
