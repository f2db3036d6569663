"""`bagel-world evaluate-agent`: agents measured in the REAL simulator twin on held-out seeds.

Every agent acts in the real env (`bagel_world.sims`, e.g. `BagelNavigateReal-v0`) with
discrete canonical actions; episode e uses seed `seed0 + e`. Training recordings use
seeds 1000 and up, so the default seeds 0..N-1 are held out. Reported per agent:

- success rate: episodes that end with `info["is_success"]` (multiview, whose real env
  never terminates, counts reaching its target view `info["at_goal_view"]` and stops there);
- mean steps to goal, over the successful episodes only;
- mean return: the real env's reward summed over the episode (navigation: metres of
  progress toward the goal, plus 1 on success).

Agents: `random`, `scripted` (privileged: reads the true state), `planner` (CEM over
imagined rollouts of the world model, `bagel_world.agents.planner`), `ppo` (a policy
trained purely in imagination, `--policy runs/ppo/policy.zip`) and `vlm` (the model-judged
policy). `--agent all` measures random, scripted, planner and (with `--policy`) PPO on the
same seeds and prints the markdown table of the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from bagel_world.simulator.progress import LOCATED_YAW_WEIGHT
from bagel_world.simulator.tasks import TASK_NAMES

log = logging.getLogger(__name__)

AGENTS = ("random", "scripted", "planner", "ppo", "vlm")
MODEL_AGENTS = ("planner", "ppo", "vlm")  # these need the world model's resolution and actions


@dataclass
class EvalResult:
    """Per-episode outcomes of one agent on one task's real twin."""

    agent: str
    task: str
    seeds: list[int]
    success: list[bool] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @property
    def episodes(self) -> int:
        return len(self.success)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.success else float("nan")

    @property
    def mean_steps_to_goal(self) -> float:
        """Mean episode length over successful episodes (nan when none succeeded)."""
        s = [n for n, ok in zip(self.steps, self.success) if ok]
        return float(np.mean(s)) if s else float("nan")

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def return_stderr(self) -> float:
        n = len(self.returns)
        return float(np.std(self.returns, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def seconds_per_step(self) -> float:
        """Wall time per real step over the whole run (the agent's thinking and the real env)."""
        n = sum(self.steps)
        return self.wall_s / n if n else float("nan")

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "episodes": self.episodes, "success_rate": self.success_rate,
                "mean_steps_to_goal": self.mean_steps_to_goal, "mean_return": self.mean_return,
                "return_stderr": self.return_stderr, "seconds_per_step": self.seconds_per_step}


# ---- agents and envs ------------------------------------------------------------------------
def make_agent(name: str, task: str, *, checkpoint=None, device=None, simulator=None, policy=None,
               planner_kwargs: dict[str, Any] | None = None, vlm_kwargs: dict[str, Any] | None = None,
               ppo_deterministic: bool = True):
    """An agent by name (see `AGENTS`); model agents share one simulator per checkpoint."""
    from bagel_world import agents  # each agent's module (and its dependencies) loads on first use

    if name == "random":
        return agents.RandomAgent()
    if name == "scripted":
        return agents.scripted_agent(task)
    if name == "planner":
        return agents.CEMPlanner(simulator=simulator or _simulator(checkpoint, device), **(planner_kwargs or {}))
    if name == "vlm":
        return agents.ModelJudgedPolicy(simulator=simulator or _simulator(checkpoint, device), **(vlm_kwargs or {}))
    if name == "ppo":
        if policy is None:
            raise ValueError("the ppo agent needs policy=PATH to a policy saved by examples/train_ppo.py")
        return agents.PPOAgent(policy, deterministic=ppo_deterministic)
    raise ValueError(f"unknown agent {name!r}; accepted: {list(AGENTS)}")


def _simulator(checkpoint, device):
    from bagel_world.envs.base import shared_simulator

    return shared_simulator(checkpoint, None, device)


def make_real_env(task: str, *, template=None, max_steps: int | None = None, **env_kwargs):
    """The task's real twin in discrete mode; with a template, at its resolution and actions."""
    import gymnasium as gym

    from bagel_world.sims import REAL_ENVS, missing_packages

    missing = missing_packages(task)
    if missing:
        raise RuntimeError(f"the real simulator of {task!r} needs {missing}; pip install 'bagel-world[sims]'")
    kwargs = dict(env_kwargs)
    if template is not None:
        kwargs.setdefault("resolution", tuple(template.resolution))
        kwargs.setdefault("canonical_actions", tuple(template.canonical_actions))
    if max_steps is not None:
        kwargs["max_episode_steps"] = int(max_steps)
    return gym.make(REAL_ENVS[task][0], action_mode="discrete", **kwargs)


def run_episode(env, agent, seed: int) -> tuple[bool, int, float, list[dict[str, Any]]]:
    """One episode: (success, steps, return, per-step records of action and info)."""
    obs, info = env.reset(seed=seed)
    agent.reset(env, obs, info, seed=seed)
    total, steps, success, records = 0.0, 0, False, []
    while True:
        a = agent.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(a)
        total += float(reward)
        steps += 1
        success = bool(info.get("is_success", False) or info.get("at_goal_view", False))
        records.append({"action": int(a), "reward": float(reward), "success": success})
        if terminated or truncated or success:
            return success, steps, total, records


def every_action_outcome(env, key: str, infos: list[dict] | None = None) -> tuple[list[float], list[np.ndarray]]:
    """Each canonical action taken once from the real env's current state, which is then put
    back (`get_state` / `set_state`): `info[key]` after each (e.g. "goal_distance") and its frame.
    A list given as `infos` receives each action's whole step info."""
    base = env.unwrapped
    saved = base.get_state()
    after, frames = [], []
    try:
        for i in range(base.action_space.n):
            base.set_state(saved)
            obs, _, _, _, info = base.step(i)
            after.append(float(info[key]))
            frames.append(obs["frame"])
            if infos is not None:
                infos.append(info)
    finally:
        base.set_state(saved)
    return after, frames


def pick_figures(before: np.ndarray, after: np.ndarray, picks: Sequence[int],
                 scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """How well one way of picking actions gets closer: `before` (S,) the distance at each state,
    `after` (S, A) the distance after each action from it, the picks (S,) and the scores (S, A,
    higher is closer) they came from. Changes of distance are in the env's unit, negative =
    closer; "best" is within 0.01 of the best action's."""
    from scipy.stats import ConstantInputWarning, spearmanr

    delta = np.asarray(after, np.float64) - np.asarray(before, np.float64)[:, None]
    rows, picks = np.arange(len(delta)), np.asarray(picks, np.int64)
    gap = delta[rows, picks] - delta.mean(1)
    best = delta <= delta.min(1, keepdims=True) + 0.01
    with warnings.catch_warnings():  # states where every action ends equally far (e.g. against a wall)
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = np.array([spearmanr(sc, -np.asarray(af)).statistic for sc, af in zip(scores, after)])
    return {"states": len(delta), "delta_chosen": float(delta[rows, picks].mean()),
            "delta_average": float(delta.mean()), "delta_best": float(delta.min(1).mean()),
            "chosen_minus_average": float(gap.mean()),
            "stderr": float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else float("nan"),
            "chosen_is_best": float(best[rows, picks].mean()), "chance_is_best": float(best.mean()),
            "within_state_spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
            "ranked_states": int(np.isfinite(rho).sum())}


def shipped_ppo_policy(checkpoint, task: str, layout: str | None):
    """The PPO policy shipped with `checkpoint` (default: the shipped model) for task and layout."""
    from bagel_world.agents.ppo import shipped_policy
    from bagel_world.model.loader import resolve_checkpoint
    from bagel_world.simulator import default_checkpoint

    return shipped_policy(resolve_checkpoint(checkpoint or default_checkpoint()), task, layout)


def evaluate_agent(agent: str | Any, task: str = "navigate", episodes: int = 10, seed0: int = 0,
                   checkpoint=None, *, device=None, simulator=None, policy=None, ppo_deterministic: bool = True,
                   max_steps: int | None = None, planner_kwargs: dict[str, Any] | None = None,
                   vlm_kwargs: dict[str, Any] | None = None, env_kwargs: dict[str, Any] | None = None,
                   progress: bool = True) -> EvalResult:
    """Run `agent` (a name from `AGENTS` or an `Agent`) in the real twin on seeds seed0..seed0+episodes-1."""
    from tqdm.auto import tqdm

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed0 < 0:
        raise ValueError(f"seed0 must be >= 0, got {seed0}")
    if seed0 + episodes > 1000:
        log.warning("seeds %d..%d overlap the training recordings (1000 and up): not held out",
                    seed0, seed0 + episodes - 1)
    name = agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)
    if name == "ppo" and policy is None and isinstance(agent, str):  # the policy shipped with the world model
        policy = shipped_ppo_policy(checkpoint, task, (env_kwargs or {}).get("layout"))
    # 1. The agent, and the world model's template when the agent uses the model.
    template = None
    if isinstance(agent, str):
        if name in MODEL_AGENTS:
            simulator = simulator if simulator is not None else _simulator(checkpoint, device)
            template = simulator.tasks()[task]
        agent = make_agent(name, task, checkpoint=checkpoint, device=device, simulator=simulator, policy=policy,
                           planner_kwargs=planner_kwargs, vlm_kwargs=vlm_kwargs, ppo_deterministic=ppo_deterministic)
    # 2. The real env, then the episodes.
    env = make_real_env(task, template=template, max_steps=max_steps, **(env_kwargs or {}))
    settings = {"max_steps": max_steps or env.spec.max_episode_steps, **(env_kwargs or {})}
    if name == "planner":
        settings.update({k: v for k, v in (planner_kwargs or {}).items() if k != "progress"})
    if name == "ppo":
        settings.update(policy=str(policy), deterministic=ppo_deterministic)
    res = EvalResult(agent=name, task=task, seeds=list(range(seed0, seed0 + episodes)), settings=settings)
    t0 = time.perf_counter()
    try:
        for seed in tqdm(res.seeds, desc=f"{name} on {task}", disable=not progress):
            ok, n, ret, _ = run_episode(env, agent, seed)
            res.success.append(ok)
            res.steps.append(n)
            res.returns.append(ret)
    finally:
        agent.close()
        env.close()
    res.wall_s = time.perf_counter() - t0
    return res


# ---- the table --------------------------------------------------------------------------------
def markdown_table(results: Sequence[EvalResult]) -> str:
    """The README table: one row per agent, with the command that reproduces it."""
    lines = ["| agent | success rate | mean steps to goal | mean return | episodes | s per step | command |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        steps = "-" if math.isnan(r.mean_steps_to_goal) else f"{r.mean_steps_to_goal:.1f}"
        ret = f"{r.mean_return:+.2f}" + ("" if math.isnan(r.return_stderr) else f" ± {r.return_stderr:.2f}")
        sps = "-" if math.isnan(r.seconds_per_step) else f"{r.seconds_per_step:.2f}"
        lines.append(f"| {r.agent} | {r.success_rate:.0%} ({sum(r.success)}/{r.episodes}) | {steps} | {ret} "
                     f"| {r.episodes} | {sps} | `{r.command}` |")
    return "\n".join(lines)


def load_results(path) -> list[EvalResult]:
    """The rows an `evaluate-agent --out DIR` run wrote to DIR/results.json (DIR or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluate-agent results at {path}; run `bagel-world evaluate-agent --out DIR` first")
    keep = {f.name for f in fields(EvalResult)}
    return [EvalResult(**{k: v for k, v in row.items() if k in keep}) for row in json.loads(path.read_text())]


def success_chart(results: Sequence[EvalResult], path, labels: Sequence[str] | None = None,
                  target: float | None = None, title: str | None = None) -> Path:
    """A bar per row: its success rate with the Wilson 95% interval (scipy) and "k/n" beside it,
    and `target` as a dashed line; written to `path` (PNG). `labels` name the bars (default: the
    agents)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import binomtest

    if not results:
        raise ValueError("success_chart needs at least one result row")
    labels = [r.agent for r in results] if labels is None else list(labels)
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} result rows")
    k = [sum(r.success) for r in results]
    n = [r.episodes for r in results]
    rate = [ki / ni for ki, ni in zip(k, n)]
    ci = [binomtest(ki, ni).proportion_ci(0.95, method="wilson") for ki, ni in zip(k, n)]
    err = np.array([[p - c.low for p, c in zip(rate, ci)], [c.high - p for p, c in zip(rate, ci)]])
    y = np.arange(len(results))[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(results) + 1.2))
    ax.barh(y, rate, xerr=err, color="#4c72b0", ecolor="#333333", capsize=3)
    for yi, p, ki, ni, c in zip(y, rate, k, n, ci):
        ax.text(c.high + 0.015, yi, f"{p:.0%} ({ki}/{ni})", va="center", fontsize=8)
    if target is not None:
        ax.axvline(target, color="#c44e52", linestyle="--", linewidth=1, label=f"target {target:.0%}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("success rate in the real twin (bars: Wilson 95% interval)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paired_comparison(agent: EvalResult, baseline: EvalResult) -> dict[str, Any]:
    """`agent` against `baseline` on the same seeds, episode by episode.

    Successes: the discordant episodes (only the agent succeeded / only the baseline did) and
    McNemar's exact p-value (a two-sided binomial test on them, scipy). Returns: the mean
    paired difference with its standard error and the Wilcoxon signed-rank p-value (scipy;
    1.0 when every difference is zero).
    """
    from scipy.stats import binomtest, wilcoxon

    if agent.seeds != baseline.seeds or agent.episodes != baseline.episodes:
        raise ValueError(f"a paired comparison needs the same seeds; got {agent.seeds} and {baseline.seeds}")
    a_only = sum(x and not y for x, y in zip(agent.success, baseline.success))
    b_only = sum(y and not x for x, y in zip(agent.success, baseline.success))
    diff = np.asarray(agent.returns, np.float64) - np.asarray(baseline.returns, np.float64)
    n = len(diff)
    return {
        "agent": agent.agent, "baseline": baseline.agent, "episodes": n,
        "success_only_agent": a_only, "success_only_baseline": b_only,
        "mcnemar_p": float(binomtest(a_only, a_only + b_only, 0.5).pvalue) if a_only + b_only else 1.0,
        "return_diff": float(diff.mean()),
        "return_diff_stderr": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "wilcoxon_p": float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0,
    }


def paired_lines(results: Sequence[EvalResult], baseline: str = "random") -> list[str]:
    """One line per agent compared with `baseline` on the same seeds (none without the baseline)."""
    base = next((r for r in results if r.agent == baseline), None)
    lines = []
    for r in results:
        if base is None or r is base:
            continue
        try:
            c = paired_comparison(r, base)
        except ImportError:
            return [f"(the paired comparison with {baseline} needs scipy: pip install 'bagel-world[eval]')"]
        lines.append(f"{r.agent} vs {baseline}, same {c['episodes']} seeds: successes only {r.agent} "
                     f"{c['success_only_agent']}, only {baseline} {c['success_only_baseline']} (McNemar exact "
                     f"p = {c['mcnemar_p']:.3g}); return difference {c['return_diff']:+.2f} ± "
                     f"{c['return_diff_stderr']:.2f} (Wilcoxon p = {c['wilcoxon_p']:.3g})")
    return lines


def command_line(agent: str, args: argparse.Namespace) -> str:
    """The `bagel-world evaluate-agent` line that reproduces one row."""
    parts = ["bagel-world evaluate-agent", f"--agent {agent}", f"--task {args.task}",
             f"--episodes {args.episodes}", f"--seed {args.seed}"]
    if args.max_steps is not None:
        parts.append(f"--max-steps {args.max_steps}")
    if args.layout is not None:
        parts.append(f"--layout {args.layout}")
    if args.success is not None:
        parts.append(f"--success {args.success}")
    if getattr(args, "landmarks", False):
        parts.append("--landmarks")
    if agent in MODEL_AGENTS and args.checkpoint:
        parts.append(f"--checkpoint {args.checkpoint}")
    if agent == "planner":
        parts += [f"--candidates {args.candidates}", f"--horizon {args.horizon}", f"--iterations {args.iterations}",
                  f"--elites {args.elites}", f"--metric {args.metric}"]
        if args.metric in ("auto", "judged", "step") and args.reached_weight != _PLANNER_DEFAULTS["reached_weight"]:
            parts.append(f"--reached-weight {args.reached_weight:g}")
        if args.metric == "located" and args.yaw_weight != _PLANNER_DEFAULTS["yaw_weight"]:
            parts.append(f"--yaw-weight {args.yaw_weight:g}")
        if args.explore != _PLANNER_DEFAULTS["explore"]:
            parts.append(f"--explore {args.explore:g}")
    if agent == "ppo":
        parts += ([f"--policy {args.policy}"] if args.policy else []) + (["--ppo-stochastic"] if args.ppo_stochastic else [])
    if agent == "vlm" and args.think:
        parts.append("--think")
    return " ".join(parts)


def navigation_table(episodes: int = 10, seed0: int = 0, checkpoint=None, *, policy=None,
                     max_steps: int | None = None, planner_kwargs: dict[str, Any] | None = None,
                     device=None, progress: bool = True) -> tuple[str, list[EvalResult]]:
    """Random, scripted, planner and (given a policy) PPO on BagelNavigateReal-v0; markdown + results."""
    args = argparse.Namespace(task="navigate", episodes=episodes, seed=seed0, max_steps=max_steps, layout=None,
                              success=None, landmarks=False, checkpoint=checkpoint, policy=policy, ppo_stochastic=False,
                              think=False,
                              **{**_PLANNER_DEFAULTS, **(planner_kwargs or {})})
    results = _run_rows(["random", "scripted", "planner"] + (["ppo"] if policy else []), args, device, progress)
    return markdown_table(results), results


_PLANNER_DEFAULTS = {"candidates": 32, "horizon": 3, "iterations": 2, "elites": 6, "metric": "auto",
                     "reached_weight": 1.0, "yaw_weight": LOCATED_YAW_WEIGHT, "explore": 0.0}


def _navigate_option(task: str, option: str, what: str, value: str | None, accepted) -> dict[str, Any]:
    """A navigate-only command-line option as real-env kwargs ({} when not given), checked."""
    if value is None:
        return {}
    if task != "navigate":
        raise ValueError(f"--{option} applies to the navigate task only, not {task!r}")
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {sorted(accepted)}")
    return {option: value}


def layout_kwargs(task: str, layout: str | None) -> dict[str, Any]:
    """`--layout` as real-env kwargs ({} when not given); only the navigate task has layouts."""
    from bagel_world.sims.navigate import LAYOUTS

    return _navigate_option(task, "layout", "layout", layout, LAYOUTS)


def success_kwargs(task: str, success: str | None) -> dict[str, Any]:
    """`--success` as real-env kwargs ({} when not given); only the navigate task has success rules."""
    from bagel_world.sims.navigate import SUCCESS_RULES

    return _navigate_option(task, "success", "success rule", success, SUCCESS_RULES)


def landmarks_kwargs(task: str, landmarks: bool, layout: str | None = None) -> dict[str, Any]:
    """`--landmarks` as real-env kwargs ({} when not given); navigate's one_room only."""
    from bagel_world.sims.navigate import DEFAULT_LAYOUT, LANDMARK_LAYOUTS

    if not landmarks:
        return {}
    if task != "navigate":
        raise ValueError(f"--landmarks applies to the navigate task only, not {task!r}")
    if (layout or DEFAULT_LAYOUT) not in LANDMARK_LAYOUTS:
        raise ValueError(f"--landmarks is defined for layouts {list(LANDMARK_LAYOUTS)}, not {layout or DEFAULT_LAYOUT!r}")
    return {"landmarks": True}


def real_env_kwargs(task: str, layout: str | None = None, success: str | None = None,
                    landmarks: bool = False) -> dict[str, Any]:
    """The real-env kwargs of navigate's --layout, --success and --landmarks, each checked
    ({} when none is given)."""
    return {**layout_kwargs(task, layout), **success_kwargs(task, success), **landmarks_kwargs(task, landmarks, layout)}


def navigate_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`real_env_kwargs` of a command's arguments (--success and --landmarks where it has them)."""
    return real_env_kwargs(args.task, args.layout, getattr(args, "success", None), getattr(args, "landmarks", False))


def _run_rows(agents: Sequence[str], args: argparse.Namespace, device, progress: bool) -> list[EvalResult]:
    planner_kwargs = {k: getattr(args, k) for k in _PLANNER_DEFAULTS}
    env_kwargs = navigate_kwargs(args) or None
    policy = args.policy
    if "ppo" in agents and policy is None:  # found (or refused) once, before any agent runs
        policy = shipped_ppo_policy(args.checkpoint, args.task, args.layout)
    results = []
    for a in agents:
        res = evaluate_agent(a, args.task, args.episodes, args.seed, args.checkpoint, device=device,
                             policy=policy, ppo_deterministic=not args.ppo_stochastic, max_steps=args.max_steps,
                             planner_kwargs={**planner_kwargs, "progress": False} if a == "planner" else None,
                             vlm_kwargs={"think": args.think} if a == "vlm" else None,
                             env_kwargs=env_kwargs, progress=progress)
        res.command = command_line(a, args)
        results.append(res)
    return results


# ---- command line -----------------------------------------------------------------------------
def add_landmarks_option(p: argparse.ArgumentParser) -> None:
    """`--landmarks`, as every command that makes the navigate twin takes it (`landmarks_kwargs`)."""
    p.add_argument("--landmarks", action="store_true",
                   help="navigate one_room only: a coloured panel on each wall, so the goal image tells the side "
                        "of the box (BagelNavigateReal-v0(landmarks=True))")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `evaluate-agent` options (shared by `bagel-world evaluate-agent` and `python -m`)."""
    p.add_argument("--agent", default="all", type=_agent_list,
                   help=f"one of {', '.join(AGENTS)}, a comma list (e.g. random,planner), or 'all' = random, "
                        "scripted, planner (+ ppo with --policy); with random among them, each other agent is "
                        "also compared with it on the same seeds")
    p.add_argument("--task", default="navigate", choices=list(TASK_NAMES))
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="first seed; training recordings use 1000 and up")
    p.add_argument("--checkpoint", help="world model folder or repo id (default: the shipped model)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: as registered)")
    p.add_argument("--layout", default=None, help="navigate only: one_room, four_rooms (default) or maze")
    p.add_argument("--success", default=None,
                   help="navigate only: 'pose' (default: reach the goal pose) or 'view' (reach a pose whose view "
                        "matches the goal image: the box from the goal's distance; see BagelNavigateReal-v0)")
    add_landmarks_option(p)
    p.add_argument("--policy", default=None, help="ppo: the policy .zip written by examples/train_ppo.py (default: "
                   "the one shipped with the checkpoint for the task and layout, <checkpoint>/policies/)")
    p.add_argument("--ppo-stochastic", action="store_true", help="ppo: sample actions instead of the argmax")
    p.add_argument("--candidates", type=int, default=_PLANNER_DEFAULTS["candidates"], help="planner: sequences per iteration")
    p.add_argument("--horizon", type=int, default=_PLANNER_DEFAULTS["horizon"], help="planner: actions per sequence")
    p.add_argument("--iterations", type=int, default=_PLANNER_DEFAULTS["iterations"], help="planner: CEM refits per step")
    p.add_argument("--elites", type=int, default=_PLANNER_DEFAULTS["elites"], help="planner: sequences kept per refit")
    p.add_argument("--metric", default="auto", choices=["auto", "judged", "step", "located", "feature", "pixel"],
                   help="planner: goal distance (auto: judged where the task has a progress judge, else feature; "
                        "step: the judged closeness of each imagined step, summed; located: the distance between "
                        "where the model judges the imagined frame and the goal image were taken)")
    p.add_argument("--reached-weight", type=float, default=_PLANNER_DEFAULTS["reached_weight"],
                   help="planner, judged and step metrics: weight of the judged P(goal reached) beside the judged "
                        "distance or steps")
    p.add_argument("--yaw-weight", type=float, default=_PLANNER_DEFAULTS["yaw_weight"],
                   help="planner, located metric: metres of score per 180 degrees of judged heading error")
    p.add_argument("--explore", type=float, default=_PLANNER_DEFAULTS["explore"],
                   help="planner: probability of a random action instead of the plan at each step")
    p.add_argument("--think", action="store_true", help="vlm: think before choosing")
    p.add_argument("--out", default=None, help="write results.json and table.md into this folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")


def _agent_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",")]
    bad = [n for n in names if n not in (*AGENTS, "all")] or (names if "all" in names and len(names) > 1 else [])
    if bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give one of {', '.join(AGENTS)}, a comma list of them without "
                                         "repeats, or 'all'")
    return names


def run(args: argparse.Namespace) -> int:
    """Run what `args` asks and print the table; the CLI entry of `evaluate-agent`."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    agents = (["random", "scripted", "planner"] + (["ppo"] if args.policy else [])) if args.agent == ["all"] else args.agent
    results = _run_rows(agents, args, args.device, not args.no_progress)
    table = markdown_table(results)
    if args.out:  # the results first: nothing after them can lose a long run
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps([r.summary() for r in results], indent=2, default=float))
    table = "\n\n".join([table, *paired_lines(results)])
    print(table)
    if args.out:
        (out / "table.md").write_text(table + "\n")
        written = [out / "results.json", out / "table.md"]
        try:
            written.append(success_chart(results, out / "success.png",
                                         title=f"{results[0].task}, seeds {args.seed}-{args.seed + args.episodes - 1}"))
        except ImportError as e:  # matplotlib is in the eval extra
            print(f"no success chart: {e}; pip install 'bagel-world[eval]' for it")
        print("written to " + ", ".join(map(str, written)))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bagel_world.evaluate_agents", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
