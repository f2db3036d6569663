"""Real simulators as ground truth for the imagined envs (extra `[sims]`).

Each task has a real twin with the same observation and action spaces as its imagined
env, speaking the same text-action grammar (`bagel_world.sims.grammar`), deterministic
under a seed and rendering headless on the CPU:

| imagined env          | real env                  | simulator                                   |
|-----------------------|---------------------------|---------------------------------------------|
| BagelNavigate-v0      | BagelNavigateReal-v0      | MiniWorld (rooms, mazes; exact turns/moves) |
| BagelMultiview-v0     | BagelMultiviewReal-v0     | MuJoCo scene of primitives, orbit camera    |
| BagelFutureFrame-v0   | BagelFutureFrameReal-v0   | MuJoCo objects falling, bouncing, pushed    |
| BagelManipulate-v0    | BagelManipulateReal-v0    | Gymnasium-Robotics Fetch, Cartesian moves   |

Importing this package registers the four ids with entry points and vector entry points
(`bagel_world.sims.vector`) given as strings: no simulator is imported until an env is
made. Per task, `state_questions(task, info)` turns a step's `info` into question-answer
pairs (labels for the model's understanding path) and `explore_action(task, rng, info)`
is a biased random policy for data recording.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np

from bagel_world.simulator.tasks import MAX_EPISODE_STEPS

# task -> (env id, module, class); the time limit is the imagined twin's (MAX_EPISODE_STEPS)
REAL_ENVS: dict[str, tuple[str, str, str]] = {
    "navigate": ("BagelNavigateReal-v0", "bagel_world.sims.navigate", "BagelNavigateRealEnv"),
    "multiview": ("BagelMultiviewReal-v0", "bagel_world.sims.multiview", "BagelMultiviewRealEnv"),
    "future_frame": ("BagelFutureFrameReal-v0", "bagel_world.sims.future_frame", "BagelFutureFrameRealEnv"),
    "manipulate": ("BagelManipulateReal-v0", "bagel_world.sims.manipulate", "BagelManipulateRealEnv"),
}
# task -> the Python packages its simulator needs
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "navigate": ("miniworld", "pyglet"),
    "multiview": ("mujoco",),
    "future_frame": ("mujoco",),
    "manipulate": ("mujoco", "gymnasium_robotics"),
}

for _task, (_env_id, _module, _cls) in REAL_ENVS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=f"{_module}:{_cls}", max_episode_steps=MAX_EPISODE_STEPS[_task],
                     vector_entry_point=f"bagel_world.sims.vector:{_cls.replace('Env', 'VectorEnv')}")


def _module(task: str):
    if task not in REAL_ENVS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(REAL_ENVS)}")
    return importlib.import_module(REAL_ENVS[task][1])  # light: the simulator loads in the env class


def missing_packages(task: str) -> list[str]:
    """The packages `task`'s simulator needs that are not installed (empty when it can run)."""
    if task not in REQUIREMENTS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(REQUIREMENTS)}")
    return [p for p in REQUIREMENTS[task] if importlib.util.find_spec(p) is None]


def state_questions(task: str, info: dict[str, Any]) -> list[tuple[str, str]]:
    """Question-answer pairs about the scene of a real env's `info` (reset or step)."""
    return _module(task).state_questions(info)


def progress_poses(task: str, info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(agent pose, goal pose) that goal progress is measured on (navigate: x, z in m, yaw in
    degrees and the red box's x, z), or None for a task without a progress judge."""
    m = _module(task)
    if not hasattr(m, "progress_poses"):
        return None
    pose, goal = m.progress_poses(info)
    return np.asarray(pose, np.float32), np.asarray(goal, np.float32)


def goal_object_question(task: str) -> str | None:
    """The state question whose "yes" says a frame shows the object the goal view is taken of
    (navigate: the red box), or None for a task without one."""
    return getattr(_module(task), "GOAL_OBJECT_QUESTION", None)


PROGRESS_RULES = ("pose", "view")  # what "reaching the goal" means: the real env's `success` option


def pose_progress(task: str, pose: np.ndarray, goal: np.ndarray, rule: str = "pose", visible: bool = True
                  ) -> tuple[float, bool]:
    """(real distance to the goal, reached) between two poses of `progress_poses`, by the real
    env's success rule `rule`: "pose" (reach the goal pose) or "view" (a pose whose view matches
    the goal image; `visible` says whether the frame at `pose` shows the goal's object)."""
    if rule not in PROGRESS_RULES:
        raise ValueError(f"unknown progress rule {rule!r}; accepted: {list(PROGRESS_RULES)}")
    m = _module(task)
    if rule == "pose":
        return m.pose_progress(pose, goal)
    if not hasattr(m, "view_progress"):
        raise ValueError(f"task {task!r} has no view rule; only the pose rule")
    return m.view_progress(pose, goal, visible)


def explore_action(task: str, rng: np.random.Generator, info: dict[str, Any], *, vary: float = 0.0) -> str:
    """A text action from the task's exploration policy (biased random over canonical actions).

    `vary` is the probability of a well-formed phrase with a random amount instead, so the
    recorded data also covers the grammar beyond the canonical actions.
    """
    return _module(task).explore_action(rng, info, vary=vary)


def make_real(task: str, **kwargs) -> gym.Env:
    """`gym.make` of the task's real env, e.g. `make_real("navigate", layout="maze")`."""
    if task not in REAL_ENVS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(REAL_ENVS)}")
    return gym.make(REAL_ENVS[task][0], **kwargs)


def real_scenarios(task: str, episodes: int, seed: int = 1000, *, resolution: tuple[int, int] = (64, 64),
                   progress: bool = True, **env_kwargs):
    """A `ScenarioSet` of the real twin's start observations on seeds seed..seed+episodes-1.

    Frame e is the real env's first frame after `reset(seed=seed + e)`; for goal tasks goal
    e is its goal image. Passed to an imagined env as `scenarios=`, it starts imagined
    episodes from the real task's start and goal distribution (the dynamics stay imagined),
    e.g. to train an agent in imagination for the task it is then measured on. Keep the
    seeds apart from the evaluation seeds (0 and up by default).
    """
    from tqdm.auto import tqdm

    from bagel_world.simulator.scenarios import ScenarioSet

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    env = make_real(task, resolution=tuple(resolution), **env_kwargs)
    frames, goals = [], []
    try:
        for s in tqdm(range(seed, seed + episodes), desc=f"real {task} starts", disable=not progress):
            obs, _ = env.reset(seed=s)
            frames.append(obs["frame"] if isinstance(obs, dict) else obs)
            if isinstance(obs, dict) and "goal" in obs:
                goals.append(obs["goal"])
    finally:
        env.close()
    return ScenarioSet(np.stack(frames), np.stack(goals) if goals else None)


__all__ = ["REAL_ENVS", "REQUIREMENTS", "explore_action", "make_real", "missing_packages", "real_scenarios",
           "state_questions"]
