"""Model-predictive control by the cross-entropy method over imagined rollouts.

Each step the planner imagines `candidates` sequences of `horizon` canonical actions from
the current state, scores each sequence's imagined end frame against the goal image,
refits one categorical distribution per horizon step to the `elites` best sequences,
repeats for `iterations`, executes the first action and plans again (receding horizon).
When `candidates` >= (number of actions) ** `horizon`, the planner tries every sequence
once instead (an exhaustive search in one iteration).

Rollouts use only the simulator API. In an imagined env the planner forks the env's own
session (`env.unwrapped.session_id`), so the model sees the same history as the env; in
a real env it opens a fresh session on the real current frame each step (the real env has
no model session) and closes it after planning. Every session it makes is closed again.

Cost per plan: `iterations * horizon` batched `Simulator.step` calls. Candidates that
share a prefix share its rollout: all candidates of an iteration draw the same noise
seed per horizon step (common random numbers, so sequences are compared on the same
noise), which makes equal prefixes give equal frames; each horizon step then steps only
the distinct prefixes, all in ONE batched call.

Scores: `metric="feature"` is the cosine similarity of end frame and goal in the model's
own visual feature space (`Simulator.embed`) after subtracting the mean feature of the
task's scenario set, exactly the imagined goal envs' feature reward; `metric="judged"` is
minus the distance the same model judges between end frame and goal plus `reached_weight`
times the judged probability that the goal is reached (`bagel_world.simulator.progress`,
one batched `score` call per question and iteration; `reached_weight=0` skips the second),
the judged reward's measure (its success bonus, made smooth); `metric="step"` sums, over the
imagined steps of a sequence, how much closer the same model judges each step brought the agent
(`judge_steps`: a learned reward head asked in each rollout session right after its step, so it
sees the frame before, the action and the imagined frame after), plus `reached_weight` times the
judged P(reached) in the end session; `metric="located"` asks the same model where the end
frame and the goal image were taken (`judge_location_frames`: x, z and heading, each frame in a
fresh session) and scores minus the metres between the two places plus `yaw_weight` metres per
180 degrees of heading between them (`located_distance`); `metric="pixel"` is minus the mean squared pixel error in
[0, 1] units; `score_fn(frames, goal) -> (B,)` replaces them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from bagel_world.agents.base import Agent, canonical_actions, frame_of, goal_of, is_imagined, task_of
from bagel_world.simulator.base import Simulator
from bagel_world.simulator.progress import (
    DISTANCE_BINS,
    LOCATED_YAW_WEIGHT,
    LOCATION_BINS,
    STEP_BINS,
    judge_frames,
    judge_location_frames,
    judge_reached,
    judge_steps,
    located_distance,
    pose_distance,
)

log = logging.getLogger(__name__)

METRICS = ("feature", "judged", "step", "located", "pixel")
ScoreFn = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]  # (B, H, W, 3), goal -> (B,)

@dataclass
class PlanResult:
    """One planning step's outcome."""

    action: int  # index into the env's canonical actions: what the planner executes
    text: str  # its text
    sequence: np.ndarray  # (horizon,) int, the best-scoring sequence found
    score: float  # that sequence's end-frame score
    predicted_next: np.ndarray | None  # (H, W, 3) uint8, the imagined frame after `action` (None if never imagined)
    predicted_end: np.ndarray  # (H, W, 3) uint8, the imagined end frame of `sequence`
    probs: np.ndarray  # (horizon, A) the refitted categorical distributions
    iteration_scores: list[tuple[float, float]]  # per iteration: (mean score, elite mean score)
    candidate_sequences: np.ndarray  # (n, horizon) int, the last iteration's candidates
    candidate_scores: np.ndarray  # (n,) their end-frame scores (higher is closer to the goal)


class CEMPlanner(Agent):
    """Cross-entropy-method MPC over discrete canonical action sequences. See the module doc.

    Arguments: `simulator` (needed to act in a real env; in an imagined env the env's own
    simulator is used), `candidates` sequences per iteration, `horizon` actions per
    sequence, `iterations` refits per step, `elites` kept per refit, `metric`
    ("judged", "step", "located", "feature" or "pixel"; "auto": judged where the task has a progress judge,
    else feature) or `score_fn`, `smoothing` (weight of the old distribution in
    a refit), `choose` ("mode": the most probable first action of the final distribution;
    "best": the first action of the best sequence seen), `warm_start` (start from the
    previous step's distribution shifted by one), `reached_weight` (judged metric: weight of
    P(reached), default the judged reward's success bonus), `yaw_weight` (located metric: metres
    of score per 180 degrees of judged heading error), `explore` (the probability of taking a
    uniformly random canonical action instead of planning, each step: a judge whose errors
    persist from step to step makes some wrong views look like the goal's, and a greedy
    planner stays at them; a random step moves it off. It helped a planner scoring real
    outcomes with a CNN localiser, not the located planner on imagined frames; README),
    `seed`, `progress` (a tqdm bar per plan).
    """

    name = "planner"

    def __init__(self, simulator: Simulator | None = None, *, candidates: int = 32, horizon: int = 3,
                 iterations: int = 2, elites: int = 6, metric: str = "auto", score_fn: ScoreFn | None = None,
                 smoothing: float = 0.1, choose: str = "mode", warm_start: bool = True, reached_weight: float = 1.0,
                 yaw_weight: float = LOCATED_YAW_WEIGHT, explore: float = 0.0, seed: int | None = None,
                 progress: bool = True):
        for k, v in (("candidates", candidates), ("horizon", horizon), ("iterations", iterations), ("elites", elites)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        if elites > candidates:
            raise ValueError(f"elites ({elites}) must not exceed candidates ({candidates})")
        if metric not in METRICS + ("auto",):
            raise ValueError(f"metric must be 'auto' or one of {METRICS}, got {metric!r}")
        if choose not in ("mode", "best"):
            raise ValueError(f"choose must be 'mode' or 'best', got {choose!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if isinstance(reached_weight, bool) or not isinstance(reached_weight, (int, float, np.integer, np.floating)) \
                or not 0 <= reached_weight < np.inf:
            raise ValueError(f"reached_weight must be a finite number >= 0, got {reached_weight!r}")
        if isinstance(yaw_weight, bool) or not isinstance(yaw_weight, (int, float, np.integer, np.floating)) \
                or not 0 <= yaw_weight < np.inf:
            raise ValueError(f"yaw_weight must be a finite number >= 0, got {yaw_weight!r}")
        if isinstance(explore, bool) or not isinstance(explore, (int, float, np.integer, np.floating)) \
                or not 0 <= explore < 1:
            raise ValueError(f"explore must be a probability in [0, 1), got {explore!r}")
        if simulator is not None and not isinstance(simulator, Simulator):
            raise TypeError(f"simulator must be a bagel_world Simulator, got {type(simulator).__name__}")
        self.simulator = simulator
        self.candidates, self.horizon, self.iterations, self.elites = int(candidates), int(horizon), int(iterations), int(elites)
        self.metric, self.score_fn, self.smoothing, self.choose = metric, score_fn, float(smoothing), choose
        self.warm_start, self.progress, self.reached_weight = warm_start, progress, float(reached_weight)
        self.yaw_weight, self.explore = float(yaw_weight), float(explore)
        self._located_goal: tuple[bytes, np.ndarray] | None = None  # (goal image bytes, its judged place)
        self._rng = np.random.default_rng(seed)
        self._env: gym.Env | None = None
        self._sim: Simulator | None = None
        self._task = ""
        self.actions: tuple[str, ...] = ()
        self._prev: PlanResult | None = None
        self.last_plan: PlanResult | None = None
        self._metric = metric  # resolved per task by reset()

    @property
    def resolved_metric(self) -> str:
        """The score in use: `metric` with "auto" resolved for the task of the last `reset`."""
        return self._metric

    # ---- Agent API ---------------------------------------------------------------------------
    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:
        self._task, self.actions = task_of(env), canonical_actions(env)
        self._metric = self.metric if self.metric != "auto" else (
            "judged" if self._task in DISTANCE_BINS else "feature")
        if self._metric == "judged" and self._task not in DISTANCE_BINS:
            raise ValueError(f"metric='judged' needs a progress judge; tasks with one: {sorted(DISTANCE_BINS)}, "
                             f"not {self._task!r}")
        if self._metric == "step" and (self._task not in STEP_BINS or self.score_fn is not None):
            raise ValueError(f"metric='step' needs a step-progress judge and no score_fn; tasks with one: "
                             f"{sorted(STEP_BINS)}, not {self._task!r}")
        if self._metric == "located" and (self._task not in LOCATION_BINS or self.score_fn is not None):
            raise ValueError(f"metric='located' needs a location judge and no score_fn; tasks with one: "
                             f"{sorted(LOCATION_BINS)}, not {self._task!r}")
        if is_imagined(env):
            self._env, self._sim = env.unwrapped, env.unwrapped.simulator
        else:
            if self.simulator is None:
                raise ValueError("to act in a real env the planner needs simulator= (a world model to imagine with)")
            self._env, self._sim = None, self.simulator
            res, shape = tuple(self._sim.tasks()[self._task].resolution), frame_of(obs).shape[:2]
            if res != shape:
                raise ValueError(f"the real env renders {shape[1]}x{shape[0]} px but the model's {self._task!r} task runs "
                                 f"at {res[1]}x{res[0]}; make the real env with resolution={res}")
        n_all = len(self.actions) ** self.horizon
        if n_all <= self.candidates and self.choose == "mode" and self.elites >= n_all:
            raise ValueError(f"the {n_all} sequences of {len(self.actions)} actions x horizon {self.horizon} are all tried, "
                             f"so elites={self.elites} keeps every one and choose='mode' could not prefer any; use "
                             f"elites < {n_all} or choose='best'")
        if goal_of(obs) is None and self.score_fn is None:
            raise ValueError(f"task {self._task!r} has no goal image; give the planner a score_fn")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._prev = self.last_plan = None

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        if self.explore > 0 and self._rng.random() < self.explore:
            # A random step instead of a plan; the next plan starts afresh (no warm start from
            # a plan that was not followed).
            self._prev = self.last_plan = None
            return int(self._rng.integers(len(self.actions)))
        return self.plan(obs).action

    # ---- planning ----------------------------------------------------------------------------
    def plan(self, obs: Any) -> PlanResult:
        """Plan from the current state (imagined: the env's session; real: the frame in `obs`)."""
        if self._sim is None:
            raise RuntimeError("call reset(env, obs, info) before plan() or act()")
        sim = self._sim
        own_root = self._env is None
        root = sim.open(self._task, [frame_of(obs)]) if own_root else self._env.session_id
        if root is None:
            raise RuntimeError("the imagined env has no session; reset it first")
        try:
            result = self._cem(root, goal_of(obs))
        finally:
            if own_root:
                sim.close(root)
        self._prev = self.last_plan = result
        return result

    def _cem(self, root: str, goal: np.ndarray | None) -> PlanResult:
        N, H, A, K = self.candidates, self.horizon, len(self.actions), self.elites
        # When the candidates cover every sequence, one iteration tries them all: no sampling,
        # and further refits could only repeat it.
        exhaustive = A**H <= N
        iterations = 1 if exhaustive else self.iterations
        probs = self._initial_probs(H, A)  # (H, A)
        ref = self._goal_reference(goal)
        best = (-np.inf, None, None)  # (score, sequence, end frame)
        first_frames: dict[int, np.ndarray] = {}
        history: list[tuple[float, float]] = []
        bar = tqdm(total=iterations * H, desc="CEM plan", leave=False, disable=not self.progress)
        try:
            for it in range(iterations):
                # 1. Sample N sequences (N, H); keep last step's best plan, shifted, as a candidate.
                if exhaustive:
                    seqs = np.stack(np.unravel_index(np.arange(A**H), (A,) * H), axis=1).astype(np.int64)
                else:
                    seqs = self._sample(probs, N)
                    if it == 0 and self.warm_start and self._prev is not None and H > 1:
                        seqs[0, :-1] = self._prev.sequence[1:]
                n = len(seqs)
                # 2. Imagine them: one batched step per horizon step over the distinct prefixes.
                ends, inverse, firsts, values = self._rollout(root, seqs, bar, goal)
                # 3. Score the end frames against the goal (or sum the judged steps); refit to the elites.
                scores = (values if values is not None else self._score(ends, goal, ref))[inverse]  # (n,)
                perm = self._rng.permutation(n)  # ties broken at random, not by sample order
                elite = perm[np.argsort(-scores[perm], kind="stable")[:K]]
                freq = np.zeros((H, A))
                for t in range(H):
                    freq[t] = np.bincount(seqs[elite, t], minlength=A) / K
                probs = self.smoothing * probs + (1.0 - self.smoothing) * freq
                first_frames.update(firsts)
                history.append((float(scores.mean()), float(scores[elite].mean())))
                i = int(elite[0])
                if scores[i] > best[0]:
                    best = (float(scores[i]), seqs[i].copy(), ends[inverse[i]])
        finally:
            bar.close()
        score, seq, end = best
        if self.choose == "mode":  # the most probable first action; ties broken at random
            action = int(self._rng.choice(np.flatnonzero(probs[0] >= probs[0].max() - 1e-12)))
        else:
            action = int(seq[0])
        log.debug("plan: action %s, best %s score %.3f, iterations %s", action, seq, score, history)
        return PlanResult(action=action, text=self.actions[action], sequence=seq, score=score,
                          predicted_next=first_frames.get(action), predicted_end=end, probs=probs,
                          iteration_scores=history, candidate_sequences=seqs, candidate_scores=scores)

    def _initial_probs(self, H: int, A: int) -> np.ndarray:
        probs = np.full((H, A), 1.0 / A)
        if self.warm_start and self._prev is not None and H > 1:
            probs[:-1] = 0.5 * self._prev.probs[1:] + 0.5 / A  # receding horizon: shift by one step
        return probs

    def _sample(self, probs: np.ndarray, n: int) -> np.ndarray:
        """(n, H) action indices; column t drawn from probs[t]."""
        cdf = np.cumsum(probs, axis=1)
        u = self._rng.random((n, probs.shape[0], 1))
        return np.minimum((u > cdf[None]).sum(-1), probs.shape[1] - 1).astype(np.int64)

    def _rollout(self, root: str, seqs: np.ndarray, bar, goal: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], np.ndarray | None]:
        """Imagine every sequence from `root` (never stepped itself).

        Returns the distinct end frames (U, H, W, 3), `inverse` (N,) mapping each candidate to
        its end frame, the imagined frame after each distinct first action, and with
        `metric="step"` each distinct sequence's score (U,): its judged steps summed, plus
        `reached_weight` times the judged P(reached) at its end (else None).
        """
        sim = self._sim
        N, H = seqs.shape
        seeds = self._rng.integers(0, 2**31 - 1, size=H)  # common random numbers: one seed per step
        live: dict[tuple, str] = {}  # prefix -> session at the current depth
        made: set[str] = set()
        step = self._metric == "step"  # reset refuses it beside a score_fn
        gains: dict[tuple, float] = {}  # prefix -> its judged steps summed
        try:
            frames: dict[tuple, np.ndarray] = {}
            for t in range(H):
                prefixes = list(dict.fromkeys(tuple(s[: t + 1]) for s in seqs.tolist()))
                # 1. Fork each distinct prefix's parent (the root at depth 0), then drop the parents.
                nxt = {}
                for p in prefixes:
                    sid = sim.fork(root if t == 0 else live[p[:-1]])
                    made.add(sid)
                    nxt[p] = sid
                for sid in live.values():
                    sim.close(sid)
                    made.discard(sid)
                live = nxt
                # 2. ONE batched step for all of them.
                outs = sim.step([live[p] for p in prefixes], [self.actions[p[-1]] for p in prefixes],
                                [int(seeds[t])] * len(prefixes))
                for p, o in zip(prefixes, outs):
                    frames[p] = np.asarray(o.frame, np.uint8)
                if step:  # 3. The learned reward of this step, in the sessions that took it.
                    sids = [live[p] for p in prefixes]
                    for p, v in zip(prefixes, judge_steps(sim, self._task, sids, [goal] * len(sids))):
                        gains[p] = gains.get(p[:-1], 0.0) + float(v)
                    if t == H - 1 and self.reached_weight > 0:
                        for p, v in zip(prefixes, judge_reached(sim, sids, [goal] * len(sids))):
                            gains[p] += self.reached_weight * float(v)
                bar.update(1)
        finally:
            for sid in made:
                sim.close(sid)
        ends_keys = list(dict.fromkeys(tuple(s) for s in seqs.tolist()))
        index = {k: i for i, k in enumerate(ends_keys)}
        inverse = np.array([index[tuple(s)] for s in seqs.tolist()], np.int64)
        firsts = {int(p[0]): f for p, f in frames.items() if len(p) == 1}
        values = np.array([gains[k] for k in ends_keys], np.float64) if step else None
        return np.stack([frames[k] for k in ends_keys]), inverse, firsts, values

    # ---- scoring -----------------------------------------------------------------------------
    def score_frames(self, frames: np.ndarray, goal: np.ndarray | None) -> np.ndarray:
        """(B,) the planner's score of any frames (B, H, W, 3) against `goal`, higher is closer:
        what it ranks its imagined end frames by (e.g. real outcomes, to separate the score's
        errors from the imagination's). Needs `reset` first."""
        if self._sim is None:
            raise RuntimeError("call reset(env, obs, info) before score_frames()")
        if self._metric == "step":
            raise ValueError("metric='step' judges steps taken in a session, not frames; score_frames needs "
                             "metric 'judged', 'located', 'feature' or 'pixel'")
        frames = np.asarray(frames, np.uint8)
        return self._score(frames, goal, self._goal_reference(goal))

    def _goal_reference(self, goal: np.ndarray | None):
        if self.score_fn is not None or goal is None or self._metric in ("judged", "step"):
            return None
        if self._metric == "pixel":
            return goal.astype(np.float32) / 255.0
        if self._metric == "located":  # the goal's judged place, asked once per goal image
            key = np.ascontiguousarray(goal).tobytes()
            if self._located_goal is None or self._located_goal[0] != key:
                self._located_goal = (key, judge_location_frames(self._sim, self._task, goal[None])[0])
            return self._located_goal[1]
        return self._centred_features(goal[None])[0]

    def _centred_features(self, frames: np.ndarray) -> np.ndarray:
        return self._sim.centred_features(self._task, frames)

    def _score(self, frames: np.ndarray, goal: np.ndarray | None, ref) -> np.ndarray:
        """(B,) higher is closer to the goal."""
        if self.score_fn is not None:
            s = np.asarray(self.score_fn(frames, goal), np.float64)
            if s.shape != (len(frames),):
                raise ValueError(f"score_fn must return one score per frame, shape ({len(frames)},); got {s.shape}")
            return s
        if self._metric == "judged":
            d, p = judge_frames(self._sim, self._task, frames, [goal] * len(frames), reached=self.reached_weight > 0)
            return -d if p is None else -d + self.reached_weight * p
        if self._metric == "located":
            return -pose_distance(*located_distance(judge_location_frames(self._sim, self._task, frames), ref),
                                  self.yaw_weight)
        if self._metric == "pixel":
            return -((frames.astype(np.float32) / 255.0 - ref) ** 2).mean(axis=(1, 2, 3)).astype(np.float64)
        return (self._centred_features(frames) @ ref).astype(np.float64)
