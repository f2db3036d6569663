"""`bagel-world dream`: real episodes, world-model fine-tuning and imagination, round after round.

When a world model does not transfer, the agent's own real experience is what it lacks:
the states the agent reaches are not those the exploration data covered. DIAMOND and
Dreamer close that loop; `dream` does it with this project's parts:

- **round 0** trains the policy on the starting model (PPO in imagination; the planner
  needs none) and evaluates it in the real twin on the held-out seeds;
- **round r >= 1**:
  1. *collect*: the current agent acts in the real twin on training seeds (a share
     `explore` of its actions replaced by uniform canonical ones), recorded as
     `bagel-world record` records (frames, actions, state answers, progress poses) into
     WORK/round-r/data/;
  2. *fine-tune*: the previous round's model trains (`bagel-world train --init`) on the
     base recordings plus every round's collected episodes so far;
  3. *policy*: PPO continues in imagination on the new model, from the previous round's
     policy and the real twin's start states (`bagel-world scenarios` on training seeds);
  4. *evaluate*: the agent with the new model in the real twin, on the same held-out seeds
     every round, written to WORK/round-r/eval.json.

Each stage's output marks it done, so a stopped run resumes at the stage it was in (and
recording and training resume inside their stage). WORK/rounds.md and rounds.json hold
one row per round: collected episodes and their real success, then the evaluation.

    bagel-world dream --task navigate --layout one_room --agent planner --rounds 3 \\
        --base-data data/rec --work runs/dream
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DREAM_AGENTS = ("planner", "ppo")


@dataclass
class DreamConfig:
    """Everything a `dream` run takes; written to WORK/dream.json."""

    task: str = "navigate"
    layout: str | None = None  # navigate only
    agent: str = "planner"
    rounds: int = 3
    work: str = "runs/dream"
    init: str | None = None  # the starting world model (default: the shipped one)
    base_data: str | None = None  # recordings every fine-tune also trains on (`bagel-world record --out`)
    collect_episodes: int = 32
    collect_steps: int = 32
    collect_seed: int = 20_000  # round r collects on seeds collect_seed + (r - 1) * collect_episodes + e
    explore: float = 0.25
    train_steps: int = 500
    train: dict[str, Any] = field(default_factory=dict)  # more TrainConfig fields (batch_size, progress_share, ...)
    ppo_timesteps: int = 20_480  # per round
    ppo: dict[str, Any] = field(default_factory=dict)  # more PPOArgs fields (num_envs, n_steps, ...)
    scenario_episodes: int = 512
    scenario_seed: int = 30_000
    eval_episodes: int = 20
    eval_seed: int = 0
    max_steps: int | None = None  # the real twin's episode limit in evaluation (default: as registered)
    success: str | None = None  # navigate: the real twin's success rule (default: "pose")
    landmarks: bool = False  # navigate one_room: coloured wall panels
    planner: dict[str, Any] = field(default_factory=dict)  # CEMPlanner settings
    device: str | None = None

    def env_kwargs(self) -> dict[str, Any]:
        """The real twin's kwargs (layout, success rule, landmarks), checked."""
        from bagel_world.evaluate_agents import real_env_kwargs

        return real_env_kwargs(self.task, self.layout, self.success, self.landmarks)

    def validate(self) -> None:
        from bagel_world.simulator.tasks import TASK_NAMES
        from bagel_world.training.config import TrainConfig

        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; accepted: {list(TASK_NAMES)}")
        self.env_kwargs()
        if self.agent not in DREAM_AGENTS:
            raise ValueError(f"dream trains agent 'planner' or 'ppo', not {self.agent!r}")
        for k in ("rounds", "collect_episodes", "collect_steps", "train_steps", "ppo_timesteps", "eval_episodes",
                  "scenario_episodes"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"explore is a share of actions in [0, 1], got {self.explore}")
        ranges = {"collection": (self.collect_seed, self.collect_seed + self.rounds * self.collect_episodes),
                  "scenario": (self.scenario_seed, self.scenario_seed + self.scenario_episodes),
                  "evaluation": (self.eval_seed, self.eval_seed + self.eval_episodes)}
        for a, b in (("collection", "evaluation"), ("scenario", "evaluation"), ("collection", "scenario")):
            (lo, hi), (lo2, hi2) = ranges[a], ranges[b]
            if lo < hi2 and lo2 < hi:
                raise ValueError(f"{a} seeds {lo}..{hi - 1} overlap the {b} seeds {lo2}..{hi2 - 1}")
        if self.base_data is not None:
            from bagel_world.training.data import list_shards

            if not list_shards(self.base_data, self.task):
                raise ValueError(f"--base-data {self.base_data!r} has no {self.task} shards "
                                 f"({self.base_data}/{self.task}/shard-*.npz); give a `bagel-world record --out` folder")
        from bagel_world.agents.ppo import PPOArgs

        _check_settings("train", self.train, {f.name for f in dataclasses.fields(TrainConfig)},
                        {"data", "out", "work", "init", "world_steps", "distributed", "device"})
        _check_settings("ppo", self.ppo, {f.name for f in dataclasses.fields(PPOArgs)},
                        {"env_id", "timesteps", "scenarios", "checkpoint", "device", "out", "resume", "init"})
        from bagel_world.agents.planner import CEMPlanner

        _check_settings("planner", self.planner, set(inspect.signature(CEMPlanner).parameters),
                        {"simulator", "score_fn", "progress"})
        unused = {"planner": self.planner} if self.agent == "ppo" else {"ppo": self.ppo}
        for k, v in unused.items():
            if v:
                raise ValueError(f"{k} settings {sorted(v)} do not apply to agent {self.agent!r}")


def _check_settings(name: str, given: dict[str, Any], known: set[str], fixed: set[str]) -> None:
    bad = sorted(set(given) - (known - fixed))
    if bad:
        raise ValueError(f"{name} settings {bad} are not ones dream passes on; accepted: {sorted(known - fixed)}"
                         + (f" (dream sets {sorted(fixed & known)} itself)" if fixed & known else ""))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Dream:
    """One `dream` run in its WORK folder (see the module doc)."""

    def __init__(self, cfg: DreamConfig, progress: bool = True):
        cfg.validate()
        self.cfg, self.progress = cfg, progress
        self.work = Path(cfg.work)
        self.work.mkdir(parents=True, exist_ok=True)
        saved = self.work / "dream.json"
        mine = dataclasses.asdict(cfg)
        if saved.is_file():  # a resumed run keeps its settings; only more rounds may be asked for
            old = json.loads(saved.read_text())
            default = dataclasses.asdict(DreamConfig())  # for settings added after the run began
            diff = {k for k in mine if k != "rounds" and old.get(k, default[k]) != mine[k]}
            if diff:
                raise ValueError(f"{self.work} holds a dream run with other settings ({sorted(diff)}); "
                                 "use another --work or the same settings")
        saved.write_text(json.dumps(mine, indent=2) + "\n")

    # ---- paths ----------------------------------------------------------------------------
    def round_dir(self, r: int) -> Path:
        return self.work / f"round-{r}"

    def model(self, r: int) -> str:
        if r == 0:
            from bagel_world.simulator import default_checkpoint

            return self.cfg.init or str(default_checkpoint())
        return str(self.round_dir(r) / "model")

    def policy(self, r: int) -> Path | None:
        return self.round_dir(r) / "ppo" / "policy.zip" if self.cfg.agent == "ppo" else None

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        from bagel_world.envs.base import clear_simulator_cache

        for r in range(self.cfg.rounds + 1):
            if r > 0:
                self.collect(r)
                clear_simulator_cache()  # the previous round's model is not needed again
                self.fine_tune(r)
            self.train_policy(r)
            self.evaluate(r)
            self.write_report()
        return self.rows()

    def resolution(self, r: int) -> tuple[int, int]:
        """The frame size round r's model runs the task at (the real twin renders at it)."""
        from bagel_world.envs.base import shared_simulator

        return tuple(shared_simulator(self.model(r), None, self.cfg.device).tasks()[self.cfg.task].resolution)

    def _agent(self, r: int):
        from bagel_world.evaluate_agents import make_agent

        kwargs = {"progress": False, **self.cfg.planner}
        return make_agent(self.cfg.agent, self.cfg.task, checkpoint=self.model(r), device=self.cfg.device,
                          policy=self.policy(r), planner_kwargs=kwargs)

    def collect(self, r: int) -> None:
        """Real episodes of round r's agent (the previous round's model and policy)."""
        from bagel_world.training.data import Shard, list_shards
        from bagel_world.training.recorder import record

        c, out = self.cfg, self.round_dir(r) / "data"
        done = out / "done.json"
        if done.is_file():
            return
        res = self.resolution(r - 1)
        agent = self._agent(r - 1)
        try:
            record(c.task, out, episodes=c.collect_episodes, steps=c.collect_steps,
                   seed=c.collect_seed + (r - 1) * c.collect_episodes, resolution=res, uniform=c.explore,
                   progress=self.progress, env_kwargs=c.env_kwargs(), agent=agent)
        finally:
            agent.close()
        success = _collected_success(c.task, [Shard.load(p) for p in list_shards(out, c.task)])
        _write_atomic(done, json.dumps({"episodes": c.collect_episodes, "success": success}) + "\n")

    def fine_tune(self, r: int) -> None:
        from bagel_world.training.config import TrainConfig
        from bagel_world.training.pipeline import run_training

        c, model = self.cfg, Path(self.model(r))
        done = self.round_dir(r) / "train" / "done.json"  # the export is refreshed during training: not a marker
        if done.is_file():
            return
        mix = self.round_dir(r) / "mix"
        _link_shards(mix, [self.round_dir(k) / "data" for k in range(1, r + 1)] + ([Path(c.base_data)] if c.base_data else []))
        cfg = TrainConfig(**{"warmup": max(1, c.train_steps // 10), **c.train, "data": str(mix), "out": str(model),
                             "work": str(self.round_dir(r) / "train"), "init": self.model(r - 1),
                             "world_steps": c.train_steps, "device": c.device})
        run_training(cfg, progress=self.progress)
        _write_atomic(done, json.dumps({"steps": c.train_steps}) + "\n")

    def train_policy(self, r: int) -> None:
        if self.cfg.agent != "ppo":
            return
        from bagel_world.agents.ppo import PPOArgs, train_ppo
        from bagel_world.envs import TASK_ENV_IDS

        c, path = self.cfg, self.policy(r)
        assert path is not None
        if path.is_file():
            return
        args = PPOArgs(**{"verbose": 0, **c.ppo, "env_id": TASK_ENV_IDS[c.task], "timesteps": c.ppo_timesteps,
                          "scenarios": str(self.scenarios()), "checkpoint": self.model(r), "device": c.device,
                          "out": str(path.parent), "resume": True, "init": None if r == 0 else str(self.policy(r - 1))})
        train_ppo(args)

    def scenarios(self) -> Path:
        """The real twin's start states (and goals) on the scenario seeds, made once."""
        from bagel_world.sims import real_scenarios

        c, path = self.cfg, self.work / "scenarios.npz"
        if not path.is_file():
            real_scenarios(c.task, c.scenario_episodes, c.scenario_seed, resolution=self.resolution(0),
                           **c.env_kwargs()).save(path)
        return path

    def evaluate(self, r: int) -> None:
        from bagel_world.evaluate_agents import evaluate_agent

        c, path = self.cfg, self.round_dir(r) / "eval.json"
        if path.is_file():
            return
        # By name, as `evaluate-agent` does: the real twin is made at the model's resolution and actions.
        res = evaluate_agent(c.agent, c.task, c.eval_episodes, c.eval_seed, self.model(r), device=c.device,
                             policy=self.policy(r), planner_kwargs={"progress": False, **c.planner},
                             max_steps=c.max_steps, env_kwargs=c.env_kwargs() or None,
                             progress=self.progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(res.summary(), indent=2, default=float) + "\n")

    # ---- the report -----------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in range(self.cfg.rounds + 1):
            ev, col = self.round_dir(r) / "eval.json", self.round_dir(r) / "data" / "done.json"
            if not ev.is_file():
                break
            e = json.loads(ev.read_text())
            rows.append({"round": r, "model": self.model(r),
                         "collected": json.loads(col.read_text()) if col.is_file() else None,
                         "success_rate": e["success_rate"], "successes": int(sum(e["success"])),
                         "episodes": e["episodes"], "mean_return": e["mean_return"],
                         "return_stderr": e["return_stderr"], "seconds_per_step": e["seconds_per_step"]})
        return rows

    def write_report(self) -> str:
        rows = self.rows()
        lines = ["| round | real episodes collected (success) | evaluation success | mean return | s per step |",
                 "|---|---|---|---|---|"]
        for row in rows:
            col = row["collected"]
            collected = "-" if col is None else (f"{col['episodes']} ({col['success']:.0%})" if
                                                 not math.isnan(col["success"]) else f"{col['episodes']} (n/a)")
            stderr = "" if row["return_stderr"] is None or math.isnan(row["return_stderr"]) else \
                f" ± {row['return_stderr']:.2f}"
            lines.append(f"| {row['round']} | {collected} | {row['success_rate']:.0%} ({row['successes']}/"
                         f"{row['episodes']}) | {row['mean_return']:+.2f}{stderr} | {row['seconds_per_step']:.2f} |")
        table = "\n".join(lines)
        (self.work / "rounds.md").write_text(table + "\n")
        (self.work / "rounds.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
        return table


def _collected_success(task: str, shards) -> float:
    """Share of collected episodes that reached the goal at some step (by the recorded poses)."""
    from bagel_world.sims import pose_progress

    hits = []
    for s in shards:
        if not s.has_progress:
            return float("nan")
        for e in range(s.num_episodes):
            hits.append(any(pose_progress(task, p, s.goal_poses[e])[1] for p in s.poses[e]))
    return float(np.mean(hits)) if hits else float("nan")


def _link_shards(mix: Path, folders: list[Path]) -> None:
    """`mix`/<task>/ with symlinks to every trajectory shard and branch file of `folders`,
    renamed so that names cannot collide and sort in the order given. Training holds out the
    last episodes of the last shard, so the base recordings go last: every collected episode
    is trained on."""
    import shutil

    if mix.exists():
        shutil.rmtree(mix)
    for k, folder in enumerate(folders):
        for f in sorted(folder.glob("*/*.npz")):
            if ".tmp" in f.name:
                continue
            kind, _, idx = f.stem.partition("-")
            dest = mix / f.parent.name / f"{kind}-{k:03d}{idx}.npz"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f.resolve())


def add_arguments(p) -> None:
    from bagel_world.evaluate_agents import add_landmarks_option

    d = DreamConfig()
    p.add_argument("--task", default=d.task)
    p.add_argument("--layout", default=None, help="navigate only: one_room, four_rooms (default) or maze")
    p.add_argument("--success", default=None, help="navigate only: the real twin's success rule, 'pose' (default) or "
                   "'view' (see BagelNavigateReal-v0)")
    add_landmarks_option(p)
    p.add_argument("--agent", default=d.agent, choices=list(DREAM_AGENTS))
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--work", default=d.work, help="where rounds, models, policies and the report go (resumable)")
    p.add_argument("--init", default=None, help="the starting world model (default: the shipped one)")
    p.add_argument("--base-data", default=None, help="recordings each fine-tune also trains on (record --out)")
    p.add_argument("--collect-episodes", type=int, default=d.collect_episodes, help="real episodes per round")
    p.add_argument("--collect-steps", type=int, default=d.collect_steps, help="actions per collected episode")
    p.add_argument("--collect-seed", type=int, default=d.collect_seed)
    p.add_argument("--explore", type=float, default=d.explore, help="share of uniform random actions in collection")
    p.add_argument("--train-steps", type=int, default=d.train_steps, help="world-model steps per round")
    p.add_argument("--train", default="{}", type=json.loads,
                   help='more `bagel-world train` settings as JSON, e.g. \'{"batch_size": 8, "progress_share": 0.8}\'')
    p.add_argument("--ppo-timesteps", type=int, default=d.ppo_timesteps, help="imagined PPO steps per round")
    p.add_argument("--ppo", default="{}", type=json.loads, help='more PPO settings as JSON, e.g. \'{"num_envs": 16}\'')
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--eval-seed", type=int, default=d.eval_seed)
    p.add_argument("--max-steps", type=int, default=None, help="real episode limit in evaluation")
    p.add_argument("--planner", default="{}", type=json.loads,
                   help='planner settings as JSON, e.g. \'{"candidates": 6, "horizon": 1, "elites": 1}\'')
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    names = {f.name for f in dataclasses.fields(DreamConfig)}
    cfg = DreamConfig(**{k: v for k, v in vars(args).items() if k in names})
    dream = Dream(cfg, progress=not args.no_progress)
    dream.run()
    print(dream.write_report())
    print(f"rounds written to {dream.work}/rounds.md and rounds.json")
    return 0
