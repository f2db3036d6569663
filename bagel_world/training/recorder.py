"""`bagel-world record`: roll exploration policies out in a real simulator into shards.

Episode e of a recording uses seed `seed + e`, and shard k holds episodes
[k*shard_size, (k+1)*shard_size): finished shards are skipped, so a stopped recording
resumes where it left off and any size can be asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bagel_world.training.data import Shard

log = logging.getLogger(__name__)


def make_bare_env(task: str, resolution: tuple[int, int]):
    """The real env of `task` without TimeLimit: episodes are as long as asked."""
    import gymnasium as gym

    from bagel_world.sims import REAL_ENVS

    return gym.make(REAL_ENVS[task][0], resolution=tuple(resolution), max_episode_steps=None).unwrapped


def record_episode(env, task: str, seed: int, steps: int, vary: float, uniform: float = 0.0
                   ) -> tuple[np.ndarray, list[str], list[list[tuple[str, str]]]]:
    """One episode: frames (steps+1, H, W, 3), actions (steps), QA pairs per frame.

    Each action is, with probability `uniform`, a canonical action drawn uniformly (so every
    action is seen from every kind of state, which a world model needs to learn what each
    one does), and otherwise the task's exploration policy. With `uniform=0` the draws are
    exactly the exploration policy's, so evaluation episodes do not depend on this option.
    """
    from bagel_world.sims import explore_action, state_questions
    from bagel_world.simulator.tasks import CANONICAL_ACTIONS

    if not 0.0 <= uniform <= 1.0:
        raise ValueError(f"uniform must be a probability in [0, 1], got {uniform!r}")
    canon = CANONICAL_ACTIONS[task]
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    frames, actions, qa = [_frame(obs)], [], [state_questions(task, info)]
    for _ in range(steps):
        if uniform > 0 and rng.random() < uniform:
            action = canon[int(rng.integers(len(canon)))]
        else:
            action = explore_action(task, rng, info, vary=vary)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(_frame(obs))
        actions.append(action)
        qa.append(state_questions(task, info))
    return np.stack(frames), actions, qa


def _frame(obs) -> np.ndarray:
    return obs["frame"] if isinstance(obs, dict) else obs


def record(
    task: str,
    out: str | Path,
    episodes: int,
    steps: int = 16,
    shard_size: int = 32,
    seed: int = 0,
    resolution: tuple[int, int] = (64, 64),
    vary: float = 0.1,
    uniform: float = 0.0,
    progress: bool = True,
) -> list[Path]:
    """Record `episodes` episodes of `steps` actions of `task` into out/<task>/shard-*.npz."""
    from tqdm.auto import tqdm

    from bagel_world.sims import REAL_ENVS, missing_packages

    if task not in REAL_ENVS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(REAL_ENVS)}")
    missing = missing_packages(task)
    if missing:
        raise RuntimeError(f"recording {task!r} needs {missing}; install them with `pip install 'bagel-world[sims]'`")
    if episodes < 1 or steps < 1 or shard_size < 1:
        raise ValueError(f"episodes, steps and shard_size must be >= 1; got {episodes}, {steps}, {shard_size}")
    folder = Path(out) / task
    paths = []
    env = None
    n_shards = (episodes + shard_size - 1) // shard_size
    bar = tqdm(total=episodes, desc=f"record {task}", disable=not progress)
    for k in range(n_shards):
        path = folder / f"shard-{k:05d}.npz"
        first, last = k * shard_size, min(episodes, (k + 1) * shard_size)
        paths.append(path)
        if path.is_file():
            bar.update(last - first)
            continue
        if env is None:
            env = make_bare_env(task, resolution)
        eps = [record_episode(env, task, seed + e, steps, vary, uniform) for e in _tick(range(first, last), bar)]
        n_q = max(len(q) for _, _, qa in eps for q in qa)
        qa_q = np.full((len(eps), steps + 1, n_q), "", dtype=object)
        qa_a = np.full_like(qa_q, "")
        for i, (_, _, qa) in enumerate(eps):
            for t, pairs in enumerate(qa):
                for j, (q, a) in enumerate(pairs):
                    qa_q[i, t, j], qa_a[i, t, j] = q, a
        Shard(
            task=task,
            frames=np.stack([f for f, _, _ in eps]),
            actions=np.array([a for _, a, _ in eps]),
            qa_q=qa_q.astype(str),
            qa_a=qa_a.astype(str),
            seeds=np.arange(seed + first, seed + last),
        ).save(path)
    bar.close()
    if env is not None:
        env.close()
    return paths


def _tick(it, bar):
    for x in it:
        yield x
        bar.update(1)
