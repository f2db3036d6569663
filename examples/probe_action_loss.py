"""How much does the model's flow loss depend on the action? True versus a wrong action.

    python examples/probe_action_loss.py --checkpoint bagel_world/checkpoints/bagel-world-small \\
        --data data/rec2 --task navigate --shift 20      # t near 1 (pure noise)
    python examples/probe_action_loss.py ... --shift 0.1                                  # t near 0

Samples one-context-frame clips of `--task` from recorded shards, computes the training
flow loss (same noise and timesteps) once with the recorded action and once with another
canonical action in its place, and prints both. A model that ignores actions gives the same
loss; the gap is how much the action tells it. `--shift` moves the logit-normal training
timesteps toward t = 1 (large) or t = 0 (small).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from transformers import AutoTokenizer

    from bagel_world.training.data import ClipSampler
    from bagel_world.training.pipeline import TASK_PROMPTS, _load_init, load_training_shards
    from bagel_world.training.world import WorldTrainArgs, WorldTrainer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="bagel_world/checkpoints/bagel-world-small")
    p.add_argument("--data", default="data/rec2")
    p.add_argument("--task", default="navigate")
    p.add_argument("--shift", type=float, default=1.0)
    p.add_argument("--clips", type=int, default=48)
    args = p.parse_args()
    shards, _ = load_training_shards(Path(args.data), 8)
    shards = [s for s in shards if s.task == args.task][:2]
    init = _load_init(args.checkpoint)
    tok = AutoTokenizer.from_pretrained(args.checkpoint)
    tr = WorldTrainer(init.config, init.model, init.vae, tok,
                      WorldTrainArgs(bf16=False, task_prompts=TASK_PROMPTS, timestep_shift=args.shift))
    tr.model.eval()
    sampler = ClipSampler(shards, 1, np.random.default_rng(0))  # 1 context frame + the next
    clips = [sampler.sample() for _ in range(args.clips)]
    canon = sorted({a for s in shards for a in np.unique(s.actions)})
    rng = np.random.default_rng(1)
    wrong = [dataclasses.replace(c, actions=[str(rng.choice([a for a in canon if a != c.actions[0]]))]) for c in clips]
    for name, batch in (("recorded action", clips), ("wrong action", wrong)):
        losses = []
        with torch.no_grad():
            for i in range(0, len(batch), 8):
                losses.append(tr.loss(batch[i : i + 8], torch.Generator().manual_seed(i))[1]["mse"])
        print(f"{name}: flow loss {np.mean(losses):.4f}")


if __name__ == "__main__":
    main()
