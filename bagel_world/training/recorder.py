"""`bagel-world record`: roll exploration policies out in a real simulator into shards.

Episode e of a recording uses seed `seed + e`, and shard k holds episodes
[k*shard_size, (k+1)*shard_size): finished shards are skipped, so a stopped recording
resumes where it left off and any size can be asked for.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from bagel_world.training.data import Shard, list_shards

log = logging.getLogger(__name__)


ENV_FILE = "env.json"  # out/<task>/env.json: the real env's kwargs the recordings there were made with


def make_bare_env(task: str, resolution: tuple[int, int], env_kwargs: dict | None = None):
    """The real env of `task` without TimeLimit: episodes are as long as asked."""
    import gymnasium as gym

    from bagel_world.sims import REAL_ENVS

    return gym.make(REAL_ENVS[task][0], resolution=tuple(resolution), max_episode_steps=None,
                    **(env_kwargs or {})).unwrapped


def _env_kwargs_of(folder: Path, env_kwargs: dict | None) -> dict:
    """The env kwargs of the recordings in `folder`: `env_kwargs` (written to its env.json the
    first time), or those of its env.json when None. One folder holds one kind of env, so
    asking for other kwargs than those already recorded there is an error."""
    path = folder / ENV_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else None
    if recorded is None and any(folder.glob("shard-*.npz")):
        recorded = {}  # recorded before env.json existed: with the env's defaults
    if env_kwargs is None:
        return recorded or {}
    if recorded is not None and recorded != env_kwargs:
        raise ValueError(f"{folder} holds recordings made with env kwargs {recorded}, not {env_kwargs}; "
                         f"record into another --out")
    if recorded is None:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(env_kwargs, sort_keys=True) + "\n")
    return env_kwargs


def record_episode(env, task: str, seed: int, steps: int, vary: float, uniform: float = 0.0, progress: dict | None = None,
                   agent=None) -> tuple[np.ndarray, list[str], list[list[tuple[str, str]]]]:
    """One episode: frames (steps+1, H, W, 3), actions (steps), QA pairs per frame. For a
    task with a progress judge, a `progress` dict receives the goal image, the per-frame
    poses and the goal pose (`bagel_world.sims.progress_poses`).

    Each action is, with probability `uniform`, a canonical action drawn uniformly (so every
    action is seen from every kind of state, which a world model needs to learn what each
    one does), and otherwise the task's exploration policy, or `agent`'s choice when an
    `bagel_world.agents` agent is given (reset on the episode's first observation; the
    episode runs all `steps` even past the goal). With `uniform=0` the draws are exactly
    the exploration policy's, so evaluation episodes do not depend on this option.
    """
    from bagel_world.sims import explore_action, progress_poses, state_questions

    if not 0.0 <= uniform <= 1.0:
        raise ValueError(f"uniform must be a probability in [0, 1], got {uniform!r}")
    canon = env.unwrapped.canonical_actions  # what uniform draws and an agent's indices both refer to
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    if agent is not None:
        agent.reset(env, obs, info, seed=seed)
    frames, actions, qa = [_frame(obs)], [], [state_questions(task, info)]
    poses = [progress_poses(task, info)]
    for _ in range(steps):
        if uniform > 0 and rng.random() < uniform:
            action = canon[int(rng.integers(len(canon)))]
        elif agent is not None:
            action = canon[int(agent.act(obs, info))]
        else:
            action = explore_action(task, rng, info, vary=vary)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(_frame(obs))
        actions.append(action)
        qa.append(state_questions(task, info))
        poses.append(progress_poses(task, info))
    if progress is not None and poses[0] is not None:
        progress.update(goal=obs["goal"], poses=np.stack([p for p, _ in poses]), goal_pose=poses[0][1])
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
    env_kwargs: dict | None = None,
    agent=None,
) -> list[Path]:
    """Record `episodes` episodes of `steps` actions of `task` into out/<task>/shard-*.npz.

    `env_kwargs` go to the real env (navigate: `{"layout": "one_room"}`) and are kept in
    out/<task>/env.json, where `record_branches` finds them. With an `agent`, it chooses
    the actions that are not uniform draws (see `record_episode`)."""
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
    env_kwargs = _env_kwargs_of(folder, dict(env_kwargs or {}))
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
            env = make_bare_env(task, resolution, env_kwargs)
        prog = [{} for _ in range(first, last)]
        eps = [record_episode(env, task, seed + e, steps, vary, uniform, prog[e - first], agent=agent)
               for e in _tick(range(first, last), bar)]
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
            **({} if not prog[0] else {"goals": np.stack([p["goal"] for p in prog]),
                                       "poses": np.stack([p["poses"] for p in prog]),
                                       "goal_poses": np.stack([p["goal_pose"] for p in prog])}),
        ).save(path)
    bar.close()
    if env is not None:
        env.close()
    return paths


def backfill_poses(out: str | Path, task: str = "navigate", progress: bool = True) -> list[Path]:
    """Add what newer recordings keep in their poses to older shards of out/<task>: each
    episode's real env is reset with its seed (the reset alone, no rendering of steps) and the
    reset's `progress_poses` extend the shard's poses (navigate: the red box's x, z after
    x, z, yaw). The reset must give the recorded start pose and goal pose, or the shard is
    left as it is and an error says so. Shards already complete are skipped; each is
    rewritten atomically, so an interrupted backfill resumes."""
    from tqdm.auto import tqdm

    from bagel_world.sims import progress_poses

    folder = Path(out) / task
    paths = list_shards(out, task)
    if not paths:
        raise ValueError(f"no {task} shards under {folder}")
    env_kwargs = _env_kwargs_of(folder, None)
    env, done = None, []
    try:
        for path in tqdm(paths, desc=f"backfill {task}", disable=not progress):
            shard = Shard.load(path)
            if not shard.has_progress:
                raise ValueError(f"{path} has no progress poses: {task} recordings without goals have none to extend")
            if env is None:
                env = make_bare_env(task, shard.frames.shape[2:4], env_kwargs)
                _, info = env.reset(seed=int(shard.seeds[0]))
                full = len(progress_poses(task, info)[0])
            P = shard.poses.shape[-1]
            if P == full:
                continue
            poses, goal_poses = [], []
            for e, seed in enumerate(shard.seeds):
                _, info = env.reset(seed=int(seed))
                pose, goal = progress_poses(task, info)
                if not (np.allclose(pose[:P], shard.poses[e, 0], atol=1e-3)
                        and np.allclose(goal[:P], shard.goal_poses[e], atol=1e-3)):
                    raise ValueError(f"{path} episode {e} (seed {int(seed)}): the env's reset gives start pose "
                                     f"{pose[:P].tolist()} and goal {goal[:P].tolist()}, the shard "
                                     f"{shard.poses[e, 0].tolist()} and {shard.goal_poses[e].tolist()}; "
                                     f"recorded with another env version or kwargs than {env_kwargs}")
                # what the reset adds does not move during an episode (navigate: the box)
                extra = np.broadcast_to(pose[P:], (shard.poses.shape[1], full - P))
                poses.append(np.concatenate([shard.poses[e], extra], -1))
                goal_poses.append(goal)
            shard.poses, shard.goal_poses = np.stack(poses).astype(np.float32), np.stack(goal_poses).astype(np.float32)
            shard.save(path)
            done.append(path)
    finally:
        if env is not None:
            env.close()
    return done


def record_branches(
    task: str,
    out: str | Path,
    points: int = 2,
    context: int = 4,
    max_step: int = 16,
    seed: int = 0,
    progress: bool = True,
    existing_only: bool = False,
) -> list[Path]:
    """For each recorded episode of `task` under out/<task>/, pick `points` random steps t and
    record the real outcome of every canonical action from the state at t (exact replay:
    `reset(seed)` plus the episode's first t actions). Written next to each trajectory shard
    as out/<task>/branches-<k>.npz (resumable per shard):

      context          (N, C, H, W, 3) uint8   the frames t-C+1..t of the episode
      context_actions  (N, C-1) str            the actions between them
      outcomes         (N, K, H, W, 3) uint8   the next frame of each canonical action
      actions          (K,) str                the canonical actions
      seeds, steps     (N,) int64              where each point comes from
    and, when the shards have progress poses: poses (N, P) at each point, outcome_poses
    (N, K, P) after each action, and the episode's goals (N, H, W, 3) and goal_poses (N, P),
    from which training asks how much closer each action brought the agent.

    A branch file written before branches kept poses gets them added (each point replayed
    from its stored seed and step, its outcomes checked against the stored frames);
    `existing_only` does only that, recording no new file (`record --backfill-poses`).

    Trajectories only show one action per state. Branches show all of them from the same
    state, so a batch of them leaves the action as the only thing that explains the target
    (see `BranchSampler`). The env is made with the kwargs `record` kept in out/<task>/env.json.
    """
    from tqdm.auto import tqdm

    from bagel_world.sims import progress_poses
    from bagel_world.simulator.tasks import CANONICAL_ACTIONS
    from bagel_world.training.controllability import real_each
    from bagel_world.training.data import Branches

    if points < 1 or context < 1 or max_step < context - 1:
        raise ValueError(f"points and context must be >= 1 and max_step >= context - 1; got {points}, {context}, {max_step}")
    shard_paths = list_shards(out, task)
    if not shard_paths:
        raise FileNotFoundError(f"no trajectory shards of {task!r} under {out}; run `bagel-world record` first")
    canon = list(CANONICAL_ACTIONS[task])
    rng = np.random.default_rng(seed)
    env, paths = None, []
    for sp in tqdm(shard_paths, desc=f"branches {task}", disable=not progress):
        path = sp.with_name(sp.name.replace("shard-", "branches-"))
        paths.append(path)
        shard = Shard.load(sp)
        T = shard.actions.shape[1]
        lo, hi = context - 1, min(max_step, T - 1)
        # Drawn before the skip check, so a resumed recording draws the same points.
        draws = [rng.integers(lo, hi + 1, size=points) for _ in range(shard.num_episodes)]
        exists = path.is_file()
        if exists and (not shard.has_progress or Branches.file_has_progress(path)) or not exists and existing_only:
            continue
        old = Branches.load(path) if exists else None  # to add its poses
        C = context if old is None else old.context.shape[1]
        if env is None:
            env = make_bare_env(task, tuple(shard.frames.shape[2:4]), _env_kwargs_of(Path(out) / task, None))
        # The points: those drawn now, or an older file's (to add its poses).
        where = {int(sd): e for e, sd in enumerate(shard.seeds)}
        chosen = [(e, t) for e in range(shard.num_episodes) for t in sorted(int(x) for x in draws[e])] if old is None \
            else [(where[int(sd)], int(t)) for sd, t in zip(old.seeds, old.steps)]
        ctx, ctx_a, outs, seeds, steps, after = [], [], [], [], [], []
        for n, (e, t) in enumerate(chosen):
            s = int(shard.seeds[e])
            prefix = [str(a) for a in shard.actions[e, :t]]
            infos: list = []
            outcome = real_each(env, s, prefix, canon, infos)
            ctx.append(shard.frames[e, t - C + 1 : t + 1])
            ctx_a.append(prefix[t - C + 1 :] if C > 1 else [])
            outs.append(outcome)
            seeds.append(s)
            steps.append(t)
            if shard.has_progress:
                P = shard.poses.shape[-1]
                after.append(np.stack([progress_poses(task, i)[0][:P] for i in infos]))
            # Replay must reach the recorded state: when the recorded action was a
            # canonical one, its outcome is the recorded next frame (and an older file's
            # outcomes are what replay gives again).
            a = str(shard.actions[e, t])
            if a in canon and not np.array_equal(outcome[canon.index(a)], shard.frames[e, t + 1]) \
                    or old is not None and not np.array_equal(outcome, old.outcomes[n]):
                raise RuntimeError(f"replaying {task} seed {s} did not reproduce its recorded frames after step {t}")
        idx = np.array([e for e, _ in chosen], np.int64)
        Branches(task=task, context=np.stack(ctx), context_actions=np.array(ctx_a, dtype=str).reshape(len(ctx), C - 1),
                 outcomes=np.stack(outs), actions=np.array(canon), seeds=np.array(seeds), steps=np.array(steps),
                 **({} if not shard.has_progress else {
                     "poses": shard.poses[idx, np.array(steps)], "outcome_poses": np.stack(after).astype(np.float32),
                     "goals": shard.goals[idx], "goal_poses": shard.goal_poses[idx]})).save(path)
    if env is not None:
        env.close()
    return paths


def _tick(it, bar):
    for x in it:
        yield x
        bar.update(1)
