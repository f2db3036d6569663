"""PPO in imagination with Stable-Baselines3 (extra `[rl]`: stable-baselines3, tensorboard).

The policy learns only from the world model: N imagined envs of the discrete-action
task (`gym.make_vec(env_id, num_envs=N, action_mode="discrete")`, one batched model call
per step for all N) are adapted to SB3's `VecEnv` by `SB3VecEnv`, and PPO trains a CNN
policy (`MultiInputPolicy`: one NatureCNN per image of the Dict observation {frame, goal},
features concatenated) on the imagined reward (goal similarity in the model's feature
space). Checkpoints go to `OUT/checkpoints/`, TensorBoard logs to `OUT/tb/`, the final
policy to `OUT/policy.zip`; `PPOAgent(OUT/"policy.zip")` then acts in either twin (the
real one has the same spaces), which is how `bagel-world evaluate-agent --agent ppo`
measures it.

    from bagel_world.agents.ppo import PPOArgs, train_ppo
    path = train_ppo(PPOArgs(env_id="BagelNavigate-v0", timesteps=20_000, out="runs/ppo"))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from bagel_world.agents.base import Agent

log = logging.getLogger(__name__)


def _sb3():
    try:
        import stable_baselines3
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("PPO needs Stable-Baselines3: pip install 'bagel-world[rl]' "
                          "(stable-baselines3 and tensorboard)") from e
    return stable_baselines3


# ---- the VecEnv adapter ------------------------------------------------------------------------
class _VecEnvAdapter:
    """The methods of `SB3VecEnv`, which `_make_sb3_vecenv_class` puts on SB3's `VecEnv` (so that
    importing this module does not import SB3). `super()`, `num_envs`, `reset_infos` and the
    `_seeds`, `_reset_seeds`, `_reset_options` and `_get_indices` helpers are `VecEnv`'s."""

    def __init__(self, venv):
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self):
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, infos = self.venv.reset(seed=seeds)
        self.reset_infos = _unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        # 1. One batched step of every sub-env; Gymnasium's dict of info arrays -> SB3's list of dicts.
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = _unbatch_infos(infos, self.num_envs)
        # 2. Each finished episode's last observation goes into its info, as SB3 expects.
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = _index_obs(obs, i)
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        # 3. The finished sub-envs are reset now, and their first observations replace the last ones.
        if dones.any():
            new_obs, reset_infos = self.venv.reset(options={"reset_mask": dones})
            resets = _unbatch_infos(reset_infos, self.num_envs)
            for i in np.flatnonzero(dones):
                _set_obs(obs, i, _index_obs(new_obs, i))
                self.reset_infos[i] = resets[i]
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.venv.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        for i in self._get_indices(indices):
            setattr(self.venv.envs[i], attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self.venv.envs[i], method_name)(*method_args, **method_kwargs)
                for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [e.render() for e in self.venv.envs]


def _make_sb3_vecenv_class():
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    class SB3VecEnv(_VecEnvAdapter, VecEnv):
        """SB3 `VecEnv` over a Gymnasium `VectorEnv` with NEXT_STEP autoreset (our `BagelVectorEnv`).

        SB3 expects a finished sub-env to be reset within the same `step` (its observation
        then being the new episode's first, the last one in `info["terminal_observation"]`).
        So after each batched step, the sub-envs that ended are reset at once through the
        vector env's `options={"reset_mask": ...}`, which also clears its own autoreset.
        """

    return SB3VecEnv


def _unbatch_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's dict of arrays (with `_key` masks) -> SB3's list of per-env dicts."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for k, v in infos.items():
        if k.startswith("_"):
            continue
        per_env = _unbatch_infos(v, n) if isinstance(v, dict) else v
        for i in np.flatnonzero(infos.get(f"_{k}", np.ones(n, bool))):
            out[i][k] = per_env[i]
    return out


def _index_obs(obs, i: int):
    return {k: v[i].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[i].copy()


def _set_obs(obs, i: int, value) -> None:
    if isinstance(obs, dict):
        for k in obs:
            obs[k][i] = value[k]
    else:
        obs[i] = value


def __getattr__(name: str):
    if name == "SB3VecEnv":  # built on first use: importing this module does not import SB3
        cls = _make_sb3_vecenv_class()
        globals()["SB3VecEnv"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- training ----------------------------------------------------------------------------------
@dataclass
class PPOArgs:
    """PPO-in-imagination settings (CleanRL-style: one dataclass, one function)."""

    env_id: str = "BagelNavigate-v0"
    timesteps: int = 20_000  # total imagined env steps (all envs together)
    num_envs: int = 8  # imagined envs stepped in one model batch
    n_steps: int = 64  # steps per env per PPO update (rollout = num_envs * n_steps)
    batch_size: int = 128
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.95
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    clip_range: float = 0.2
    max_episode_steps: int | None = None  # default: the registered limit (64 for navigation)
    scenarios: str | None = None  # start/goal scenario set (.npz, e.g. `bagel-world scenarios`); default: the model's
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # more keywords of the imagined env, e.g. its reward
    resume: bool = False  # continue from the newest OUT/checkpoints/ppo_*_steps.zip if there is one
    init: str | None = None  # start from this saved policy (.zip) instead of a new one (a checkpoint to resume wins)
    save_every: int = 5_000  # env steps between checkpoints (0: none)
    checkpoint: str | None = None  # world model (default: the shipped one)
    device: str | None = None  # world model device
    policy_device: str = "cpu"  # the CNN policy's device
    seed: int = 0
    out: str = "runs/ppo"
    verbose: int = 1


def make_imagined_vecenv(args: PPOArgs, simulator=None):
    """The N imagined envs (discrete actions) as an SB3 VecEnv with episode statistics."""
    from stable_baselines3.common.vec_env import VecMonitor

    import bagel_world  # noqa: F401  (registers the ids)

    if not isinstance(args.env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of env keywords, got {args.env_kwargs!r}")
    fixed = {"action_mode", "report_latency", "simulator", "checkpoint", "device", "max_episode_steps", "scenarios"}
    if clash := sorted(fixed & set(args.env_kwargs)):
        raise ValueError(f"env_kwargs may not set {clash}: PPOArgs sets them (its own fields, or fixed for PPO)")
    kwargs: dict[str, Any] = {"action_mode": "discrete", "report_latency": False, **args.env_kwargs}
    if simulator is not None:
        kwargs["simulator"] = simulator
    else:
        kwargs.update(checkpoint=args.checkpoint, device=args.device)
    if args.max_episode_steps is not None:
        kwargs["max_episode_steps"] = args.max_episode_steps
    if args.scenarios is not None:
        kwargs["scenarios"] = args.scenarios
    venv = gym.make_vec(args.env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point", **kwargs)
    adapter = __getattr__("SB3VecEnv")(venv)
    adapter.seed(args.seed)
    return VecMonitor(adapter)


def train_ppo(args: PPOArgs, simulator=None) -> Path:
    """Train PPO purely in imagination; returns the path of the saved policy (`OUT/policy.zip`)."""
    sb3 = _sb3()
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CheckpointCallback

    if args.timesteps < 1 or args.num_envs < 1 or args.n_steps < 2:
        raise ValueError(f"need timesteps >= 1, num_envs >= 1 and n_steps >= 2; got {args.timesteps}, "
                         f"{args.num_envs}, {args.n_steps}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps({**asdict(args), "stable_baselines3": sb3.__version__}, indent=2))
    # 1. Imagined envs -> SB3 VecEnv; SB3 transposes the HWC images to CHW for the CNNs.
    venv = make_imagined_vecenv(args, simulator)
    # 2. PPO with a CNN per image key, TensorBoard logs, periodic checkpoints; or the newest
    #    checkpoint, continued for the steps it has left.
    latest = latest_checkpoint(out) if args.resume else None
    if latest is not None:
        model = PPO.load(latest, env=venv, device=args.policy_device, tensorboard_log=str(out / "tb"))
        log.info("resuming PPO from %s at %d steps", latest, model.num_timesteps)
    elif args.init is not None:  # the given policy's weights, trained on with these settings
        model = PPO.load(args.init, env=venv, device=args.policy_device, tensorboard_log=str(out / "tb"),
                         n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                         learning_rate=args.learning_rate, gamma=args.gamma, gae_lambda=args.gae_lambda,
                         ent_coef=args.ent_coef, clip_range=args.clip_range, verbose=args.verbose)
        model.num_timesteps = 0  # `timesteps` more steps from the given policy
        log.info("PPO starts from the policy %s", args.init)
    else:
        model = PPO("MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size,
                    n_epochs=args.n_epochs, learning_rate=args.learning_rate, gamma=args.gamma,
                    gae_lambda=args.gae_lambda, ent_coef=args.ent_coef, clip_range=args.clip_range,
                    tensorboard_log=str(out / "tb"), seed=args.seed, device=args.policy_device, verbose=args.verbose)
    remaining = args.timesteps - model.num_timesteps
    callbacks = []
    if args.save_every > 0:
        callbacks.append(CheckpointCallback(save_freq=max(1, args.save_every // args.num_envs),
                                            save_path=str(out / "checkpoints"), name_prefix="ppo"))
    try:
        if remaining > 0:
            model.learn(total_timesteps=remaining, callback=callbacks or None, tb_log_name="ppo",
                        reset_num_timesteps=latest is None)
    finally:
        venv.close()
    path = out / "policy.zip"
    tmp = out / "policy.tmp.zip"
    model.save(tmp)
    tmp.replace(path)  # atomic: a half-written policy is never taken for a finished one
    log.info("PPO policy saved to %s", path)
    return path


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest `OUT/checkpoints/ppo_<steps>_steps.zip` (most steps), or None."""
    def steps(p: Path) -> int:
        try:
            return int(p.stem.split("_")[1])
        except (IndexError, ValueError):
            return -1

    found = [p for p in (Path(out) / "checkpoints").glob("ppo_*_steps.zip") if steps(p) >= 0]
    return max(found, key=steps, default=None)


# ---- the training curve -----------------------------------------------------------------------
CURVE_TAG = "rollout/ep_rew_mean"  # SB3's mean imagined episode return over the last 100 episodes


def training_curve(out: str | Path, tag: str = CURVE_TAG) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, values) of a TensorBoard scalar over every run in `OUT/tb` (read with
    TensorBoard's own event reader), in step order. A resumed run logs into the same run
    folder again from its checkpoint's step; where two events share a step the later one wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted({p.parent for p in (Path(out) / "tb").rglob("events.out.tfevents.*")})
    if not runs:
        raise FileNotFoundError(f"no TensorBoard event files under {Path(out) / 'tb'}; is {out} a train_ppo out folder?")
    by_step: dict[int, tuple[float, float]] = {}  # step -> (wall time, value)
    for run in runs:
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        if tag not in acc.Tags()["scalars"]:
            continue
        for e in acc.Scalars(tag):
            if e.step not in by_step or e.wall_time >= by_step[e.step][0]:
                by_step[e.step] = (e.wall_time, e.value)
    if not by_step:
        raise ValueError(f"no {tag!r} scalars under {Path(out) / 'tb'} (PPO logs it once episodes have ended)")
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s][1] for s in steps])


def plot_training_curve(out: str | Path, png: str | Path, title: str | None = None) -> Path:
    """Write the imagined-return curve of a `train_ppo` run (`training_curve`) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = training_curve(out)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, values, lw=1.5)
    ax.set_xlabel("imagined env steps")
    ax.set_ylabel("mean imagined episode return")
    ax.set_title(title or f"PPO in imagination: {Path(out).name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


# ---- shipped policies --------------------------------------------------------------------------
POLICY_FOLDER = "policies"  # <checkpoint>/policies/ppo-<task>[-<layout>].zip (+ .json: the args it was trained with)


def shipped_policy_name(task: str, layout: str | None = None) -> str:
    return f"ppo-{task}" + (f"-{layout}" if layout else "") + ".zip"


def shipped_policy(checkpoint: str | Path, task: str, layout: str | None = None) -> Path:
    """The PPO policy trained in `checkpoint`'s imagination for `task` (and navigate `layout`;
    the twin's default layout is named by no suffix), shipped beside its weights; a
    FileNotFoundError names what the checkpoint does ship."""
    from bagel_world.sims.navigate import DEFAULT_LAYOUT

    layout = None if layout == DEFAULT_LAYOUT else layout
    folder = Path(checkpoint) / POLICY_FOLDER
    path = folder / shipped_policy_name(task, layout)
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("ppo-*.zip")) if folder.is_dir() else []
        raise FileNotFoundError(f"{checkpoint} ships no PPO policy for task {task!r}"
                                + (f" with layout {layout!r}" if layout else "")
                                + f" ({path.name}); it ships {have or 'none'}. Train one with "
                                  "examples/train_ppo.py and pass --policy PATH")
    return path


def policy_task(path: str | Path) -> str | None:
    """The task a saved policy was trained on, from the args `train_ppo` wrote beside it
    (`<name>.json` next to a shipped policy, or `args.json` in its out folder); None if unknown."""
    path = Path(path)
    for meta in (path.with_suffix(".json"), path.parent / "args.json"):
        if meta.is_file():
            from bagel_world.envs import TASK_ENV_IDS

            env_id = json.loads(meta.read_text()).get("env_id")
            return next((t for t, i in TASK_ENV_IDS.items() if i == env_id), None)
    return None


# ---- the agent ---------------------------------------------------------------------------------
class PPOAgent(Agent):
    """A saved SB3 PPO policy acting in an imagined or a real env (same spaces)."""

    name = "ppo"

    def __init__(self, path: str | Path, deterministic: bool = True, device: str = "cpu"):
        _sb3()
        from stable_baselines3 import PPO

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no PPO policy at {path} (train one with examples/train_ppo.py)")
        self.model = PPO.load(path, device=device)
        self.deterministic = deterministic
        self.path, self.task = path, policy_task(path)

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:
        from bagel_world.agents.base import canonical_actions, task_of

        if self.task is not None and self.task != task_of(env):
            raise ValueError(f"the policy {self.path} was trained on task {self.task!r}, not {task_of(env)!r}")
        space = env.observation_space
        want = self.model.observation_space
        if isinstance(space, gym.spaces.Dict) != isinstance(want, gym.spaces.Dict):
            raise ValueError(f"the policy was trained on observations {want}, the env gives {space}")
        n = len(canonical_actions(env))  # the env may take text; the policy picks among its canonical actions
        if self.model.action_space.n != n:
            raise ValueError(f"the policy has {self.model.action_space.n} actions, the env {n} canonical ones")

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        a, _ = self.model.predict(obs, deterministic=self.deterministic)
        return int(np.asarray(a).reshape(-1)[0])
