"""Controllability: does the imagined next frame follow the action that was asked for?

From one real state, every canonical action of the task is imagined (one forked session
per action, all stepped in one batch) and carried out in the real simulator (exact
replay: the twins are bit-deterministic under a seed, so `reset(seed)` plus the same
action prefix reaches the same state, and one more action gives its true outcome). For
action j, the imagined frame i_j is *correct* when, among the real outcomes r_1..r_K of
all K actions, the nearest to it (pixel MSE) is r_j.

A pair (state, j) counts only when r_j is distinguishable from every other outcome
(MSE > `min_outcome_mse`): a blocked move whose outcome equals another action's says
nothing about the model. The chance level is the mean of 1/K over the counted pairs; a
model that ignores the action imagines one frame for all K actions, so exactly one of
them is nearest to its own outcome and it scores chance.

`confusion[j, k]` counts counted pairs of action j whose imagined frame was nearest to the
outcome of action k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Controllability:
    actions: tuple[str, ...]
    confusion: np.ndarray = field(init=False)  # (K, K) int64
    chance_sum: float = 0.0
    states: int = 0
    skipped: int = 0  # (state, action) pairs whose real outcome was not distinguishable

    def __post_init__(self) -> None:
        self.confusion = np.zeros((len(self.actions), len(self.actions)), np.int64)

    @property
    def pairs(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.pairs) if self.pairs else float("nan")

    @property
    def chance(self) -> float:
        return float(self.chance_sum / self.pairs) if self.pairs else float("nan")

    def add(self, imagined: np.ndarray, real: np.ndarray, min_outcome_mse: float = 1.0) -> None:
        """Score one state: `imagined` and `real` are (K, H, W, 3) frames, row j for action j."""
        K = len(self.actions)
        if imagined.shape != real.shape or imagined.shape[0] != K:
            raise ValueError(f"need ({K}, H, W, 3) imagined and real frames, got {imagined.shape} and {real.shape}")
        d = pairwise_mse(imagined, real)  # d[j, k] = MSE(imagined j, real k)
        r = pairwise_mse(real, real)
        np.fill_diagonal(r, np.inf)
        self.states += 1
        for j in range(K):
            if r[j].min() <= min_outcome_mse:
                self.skipped += 1
                continue
            self.confusion[j, int(np.argmin(d[j]))] += 1
            self.chance_sum += 1.0 / K

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "chance": self.chance, "pairs": self.pairs, "states": self.states,
                "skipped_pairs": self.skipped, "actions": list(self.actions), "confusion": self.confusion.tolist()}


def pairwise_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) mean squared pixel errors between two stacks of frames."""
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    sq = (fa**2).sum(1)[:, None] + (fb**2).sum(1)[None, :] - 2.0 * fa @ fb.T
    return np.maximum(sq, 0.0) / fa.shape[1]


def imagine_each(sim, task: str, start: np.ndarray, actions: Sequence[str], seed: int) -> np.ndarray:
    """(K, H, W, 3): the imagined next frame of every action from one start frame, one batch."""
    root = sim.open(task, [start])
    sids = [root] + [sim.fork(root) for _ in actions[1:]]
    try:
        outs = sim.step(sids, list(actions), [seed] * len(sids))
    finally:
        for s in sids:
            sim.close(s)
    return np.stack([o.frame for o in outs])


def real_each(env, seed: int, prefix: Sequence[str], actions: Sequence[str], infos: list | None = None) -> np.ndarray:
    """(K, H, W, 3): the real outcome of every action from the state `prefix` reaches after
    `reset(seed)`. A twin with `get_state`/`set_state` replays the prefix once and restores
    the saved state before each later action; any other env is replayed from the reset per
    action (the twins are deterministic under a seed, and both ways give the same frames).
    A list given as `infos` receives each action's step info."""
    restorable = hasattr(env, "get_state") and hasattr(env, "set_state")
    saved, out = None, []
    for a in actions:
        if saved is not None:
            env.set_state(saved)
        else:
            env.reset(seed=seed)
            for p in prefix:
                env.step(p)
            saved = env.get_state() if restorable else None
        obs, _, _, _, info = env.step(a)
        out.append(obs["frame"] if isinstance(obs, dict) else obs)
        if infos is not None:
            infos.append(info)
    return np.stack(out)


def confusion_image(c: Controllability, title: str, path) -> None:
    """Save the confusion matrix (rows: action asked; columns: nearest real outcome) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = len(c.actions)
    rows = c.confusion.sum(1, keepdims=True)
    frac = np.divide(c.confusion, rows, out=np.zeros(c.confusion.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * K, 0.8 + 0.6 * K), dpi=100)
    ax.imshow(frac, vmin=0, vmax=1, cmap="viridis")
    for j in range(K):
        for k in range(K):
            ax.text(k, j, str(c.confusion[j, k]), ha="center", va="center",
                    color="black" if frac[j, k] > 0.6 else "white", fontsize=8)
    ax.set_xticks(range(K), c.actions, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(K), c.actions, fontsize=7)
    ax.set_xlabel("nearest real outcome")
    ax.set_ylabel("action imagined")
    ax.set_title(f"{title}: accuracy {c.accuracy:.2f} (chance {c.chance:.2f}, {c.pairs} pairs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
