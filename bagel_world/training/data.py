"""Trajectory shards: what `bagel-world record` writes and `bagel-world train` reads.

A shard is one `.npz` file holding E episodes of T steps of one task:
  frames   (E, T+1, H, W, 3) uint8   frame t is the observation before action t
  actions  (E, T) str                the text action taken after frame t
  qa_q     (E, T+1, Q) str           questions about frame t derived from simulator state
  qa_a     (E, T+1, Q) str           their answers ("yes"/"no", ...)
  seeds    (E,) int64                the simulator seed of each episode
  task     () str
and, for tasks with a progress judge (`bagel_world.simulator.progress`):
  goals       (E, H, W, 3) uint8     the episode's goal image
  poses       (E, T+1, P) float32    the pose progress is measured on, per frame
  goal_poses  (E, P) float32         the goal's pose
Shards are written atomically (tmp file + rename), so an interrupted recording resumes
by skipping finished shard files.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Shard:
    task: str
    frames: np.ndarray
    actions: np.ndarray
    qa_q: np.ndarray
    qa_a: np.ndarray
    seeds: np.ndarray
    goals: np.ndarray | None = None
    poses: np.ndarray | None = None
    goal_poses: np.ndarray | None = None

    def __post_init__(self) -> None:
        E, T1 = self.frames.shape[:2]
        progress = (self.goals, self.poses, self.goal_poses)
        if any(x is not None for x in progress):
            if any(x is None for x in progress):
                raise ValueError("goals, poses and goal_poses come together (all or none)")
            P = self.poses.shape[-1]
            if self.goals.shape != (E, *self.frames.shape[2:]) or self.poses.shape != (E, T1, P) \
                    or self.goal_poses.shape != (E, P):
                raise ValueError(f"goals (E, H, W, 3), poses (E, T+1, P), goal_poses (E, P) with E={E}, T+1={T1}; "
                                 f"got {self.goals.shape}, {self.poses.shape}, {self.goal_poses.shape}")
        if self.frames.dtype != np.uint8 or self.frames.ndim != 5 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be (E, T+1, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}")
        if self.actions.shape != (E, T1 - 1):
            raise ValueError(f"actions must be (E, T) = {(E, T1 - 1)}, got {self.actions.shape}")
        if self.qa_q.shape[:2] != (E, T1) or self.qa_q.shape != self.qa_a.shape:
            raise ValueError(f"qa_q/qa_a must be (E, T+1, Q); got {self.qa_q.shape} and {self.qa_a.shape}")

    @property
    def num_episodes(self) -> int:
        return self.frames.shape[0]

    @property
    def has_progress(self) -> bool:
        return self.goals is not None

    def episodes(self, sl: slice) -> Shard:
        """The episodes `sl` of this shard, as a shard."""
        opt = (None if x is None else x[sl] for x in (self.goals, self.poses, self.goal_poses))
        return Shard(self.task, self.frames[sl], self.actions[sl], self.qa_q[sl], self.qa_a[sl], self.seeds[sl], *opt)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        extra = {} if not self.has_progress else {
            "goals": self.goals, "poses": self.poses.astype(np.float32), "goal_poses": self.goal_poses.astype(np.float32)}
        np.savez_compressed(
            tmp, task=np.array(self.task), frames=self.frames, actions=self.actions.astype(str),
            qa_q=self.qa_q.astype(str), qa_a=self.qa_a.astype(str), seeds=self.seeds.astype(np.int64), **extra,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Shard:
        with np.load(path, allow_pickle=False) as z:
            opt = [z[k] if k in z.files else None for k in ("goals", "poses", "goal_poses")]
            return cls(str(z["task"]), z["frames"], z["actions"], z["qa_q"], z["qa_a"], z["seeds"], *opt)


def list_shards(folder: str | Path, task: str | None = None) -> list[Path]:
    folder = Path(folder)
    pattern = f"{task}/shard-*.npz" if task else "*/shard-*.npz"
    return sorted(p for p in folder.glob(pattern) if ".tmp" not in p.name)


@dataclass
class Clip:
    """A training example: `window` consecutive frames, the actions between, and QA at the end."""

    task: str
    frames: np.ndarray  # (K, H, W, 3)
    actions: list[str]  # K-1
    question: str | None
    answer: str | None
    # Where the frames come from, for latents cached per frame: (shard index, episode, t0);
    # t0 = -1 for a clip of the episode's goal image alone.
    key: tuple[int, int, int]
    # A goal image shown after the last frame, before a progress question about it.
    goal: np.ndarray | None = None

    @property
    def images(self) -> list[np.ndarray]:
        """The frames, then the goal image if there is one: every image of the sequence."""
        return list(self.frames) + ([] if self.goal is None else [self.goal])


@dataclass
class Branches:
    """Every canonical action's real outcome from recorded states (`bagel-world record --branches`)."""

    task: str
    context: np.ndarray  # (N, C, H, W, 3) uint8: the frames up to the branch state
    context_actions: np.ndarray  # (N, C-1) str
    outcomes: np.ndarray  # (N, K, H, W, 3) uint8
    actions: np.ndarray  # (K,) str
    seeds: np.ndarray  # (N,) int64
    steps: np.ndarray  # (N,) int64
    # For tasks with a progress judge (all or none): the pose at each branch state, after each
    # action, and the episode's goal, so that each outcome has a step-progress answer.
    poses: np.ndarray | None = None  # (N, P) float32
    outcome_poses: np.ndarray | None = None  # (N, K, P) float32
    goals: np.ndarray | None = None  # (N, H, W, 3) uint8
    goal_poses: np.ndarray | None = None  # (N, P) float32

    PROGRESS_FIELDS = ("poses", "outcome_poses", "goals", "goal_poses")

    @property
    def has_progress(self) -> bool:
        return self.poses is not None

    @classmethod
    def file_has_progress(cls, path: str | Path) -> bool:
        """Whether the branch file at `path` keeps poses: reads its index, not its frames."""
        with np.load(path) as z:
            return "poses" in z.files

    def select(self, keep: np.ndarray) -> Branches:
        """The points `keep` (a boolean mask or indices) selects, with every field."""
        return Branches(self.task, self.context[keep], self.context_actions[keep], self.outcomes[keep], self.actions,
                        self.seeds[keep], self.steps[keep],
                        **{k: None if getattr(self, k) is None else getattr(self, k)[keep] for k in self.PROGRESS_FIELDS})

    def __post_init__(self) -> None:
        N, C = self.context.shape[:2]
        K = len(self.actions)
        progress = [getattr(self, k) for k in self.PROGRESS_FIELDS]
        if any(x is not None for x in progress):
            if any(x is None for x in progress):
                raise ValueError(f"{', '.join(self.PROGRESS_FIELDS)} come together (all or none)")
            P = self.poses.shape[-1]
            if self.poses.shape != (N, P) or self.outcome_poses.shape != (N, K, P) or self.goal_poses.shape != (N, P) \
                    or self.goals.shape != (N, *self.context.shape[2:]):
                raise ValueError(f"poses (N, P), outcome_poses (N, K, P), goal_poses (N, P), goals (N, H, W, 3) with "
                                 f"N={N}, K={K}; got {self.poses.shape}, {self.outcome_poses.shape}, "
                                 f"{self.goal_poses.shape}, {self.goals.shape}")
        if self.context.dtype != np.uint8 or self.context.ndim != 5:
            raise ValueError(f"context must be (N, C, H, W, 3) uint8, got {self.context.shape} {self.context.dtype}")
        if self.outcomes.shape != (N, K, *self.context.shape[2:]):
            raise ValueError(f"outcomes must be (N, K, H, W, 3) = {(N, K, *self.context.shape[2:])}, got {self.outcomes.shape}")
        if self.context_actions.shape != (N, C - 1):
            raise ValueError(f"context_actions must be (N, C-1) = {(N, C - 1)}, got {self.context_actions.shape}")

    @property
    def num_points(self) -> int:
        return self.context.shape[0]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, task=np.array(self.task), context=self.context,
                            context_actions=self.context_actions.astype(str), outcomes=self.outcomes,
                            actions=self.actions.astype(str), seeds=self.seeds.astype(np.int64),
                            steps=self.steps.astype(np.int64),
                            **({} if not self.has_progress else {k: getattr(self, k) for k in self.PROGRESS_FIELDS}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Branches:
        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["task"]), z["context"], z["context_actions"], z["outcomes"], z["actions"],
                       z["seeds"], z["steps"], **{k: z[k] for k in cls.PROGRESS_FIELDS if k in z.files})


def list_branches(folder: str | Path, task: str | None = None) -> list[Path]:
    folder = Path(folder)
    pattern = f"{task}/branches-*.npz" if task else "*/branches-*.npz"
    return sorted(p for p in folder.glob(pattern) if ".tmp" not in p.name)


# Tasks whose mirror image (frames flipped left-right) is another valid clip once "left" and
# "right" swap in the actions and answers: a first-person walk and an orbiting camera. (Not
# manipulation, whose directions are the robot's, nor future_frame, which has no directions.)
MIRROR_TASKS = ("navigate", "multiview")
_LEFT_RIGHT = re.compile(r"\b(left|right)\b")
_LEFT_OF = re.compile(r"^Is the .+ left of the .+\?$")


def swap_left_right(text: str) -> str:
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def mirror_clip(clip: Clip) -> Clip:
    """The clip seen in a mirror: frames and goal flipped left-right, "left" and "right"
    swapped in the actions and in the answer ("Is the A left of the B?" flips yes/no; the
    questions themselves stay as asked). Distances and "reached" are mirror-invariant."""
    if clip.task not in MIRROR_TASKS:
        raise ValueError(f"task {clip.task!r} has no mirror rule; tasks with one: {list(MIRROR_TASKS)}")
    answer = clip.answer
    if answer is not None and clip.question is not None:
        answer = ({"yes": "no", "no": "yes"}.get(answer, answer) if _LEFT_OF.match(clip.question)
                  else swap_left_right(answer))
    return dataclasses.replace(clip, frames=np.ascontiguousarray(clip.frames[:, :, ::-1]),
                               actions=[swap_left_right(a) for a in clip.actions], answer=answer,
                               goal=None if clip.goal is None else np.ascontiguousarray(clip.goal[:, ::-1]))


class ClipSampler:
    """Uniform random clips over all loaded shards.

    On shards with progress ground truth, a share `progress_share` of the clips ask a
    goal-conditioned progress question (`bagel_world.simulator.progress`) instead of a state
    question, about a goal image: the episode's own goal (30%; 60% of the step questions
    below), or a frame of the same episode
    (hindsight goals: half of them within 2 steps of the last frame, so that "reached" has
    positives and near distances are well covered).

    `progress_rule` is what reaching the goal means, as the real env's `success` option:
    "pose" (the goal pose: hindsight goals are any frame) or "view" (a pose whose view matches
    the goal image: the distance is to the circle around the red box the goal view is taken
    on, and hindsight goals are only frames that show the box within the rule's angle, as a
    goal image does; `bagel_world.sims.pose_progress`).

    A share `step_share` of the progress questions of tasks with `STEP_BINS` asks how much
    closer the clip's last step brought the agent (`STEP_QUESTION`: the distance to the goal at the
    frame before the last action minus at the last frame, in `STEP_BINS`): the learned reward
    head a planner sums over imagined steps. It is asked with the whole clip in the context.

    A share `judge_share` of the other progress questions is asked of the last frame alone: no
    history, no action and no frame to predict, the layout the judge is asked in
    (`judge_frames`: a fresh one-frame session). Such a clip carries only the answer's
    cross-entropy and costs a fraction of a full clip.

    A share `locate_share` of the clips of tasks with `LOCATION_BINS` (on shards with poses)
    asks instead where the last frame was taken (`LOCATE_QUESTIONS`, one of the three at random),
    of that frame alone: like a `judge_share` clip, only the answer's cross-entropy. The poses
    must lie on the floor the bins cover (`LocationBins.span`), and such clips are never mirrored
    (a mirrored view has no place in the room). A share `locate_goal_share` of them asks it of
    the episode's goal image at its goal pose instead: the view a located planner must place
    (goal views face the goal object from near it, which walk frames seldom do).

    A share `mirror` of the clips of `MIRROR_TASKS` is mirrored (`mirror_clip`): twice the
    views, and every turn shown with its opposite from the mirrored state.
    """

    def __init__(self, shards: list[Shard], window: int, rng: np.random.Generator, progress_share: float = 0.0,
                 part: tuple[int, int] = (0, 1), mirror: float = 0.0, judge_share: float = 0.0,
                 progress_rule: str = "pose", step_share: float = 0.0, locate_share: float = 0.0,
                 locate_goal_share: float = 0.0):
        from bagel_world.sims import PROGRESS_RULES
        from bagel_world.simulator.progress import LOCATION_BINS

        if progress_rule not in PROGRESS_RULES:
            raise ValueError(f"unknown progress rule {progress_rule!r}; accepted: {list(PROGRESS_RULES)}")
        self.progress_rule = progress_rule
        for name, v in (("progress_share", progress_share), ("mirror", mirror), ("judge_share", judge_share),
                        ("step_share", step_share), ("locate_share", locate_share),
                        ("locate_goal_share", locate_goal_share)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.progress_share, self.mirror, self.judge_share = progress_share, mirror, judge_share
        self.step_share, self.locate_share, self.locate_goal_share = step_share, locate_share, locate_goal_share
        if not shards:
            raise ValueError("no trajectory shards to sample from; run `bagel-world record` first")
        if locate_share > 0:
            for s in shards:
                if s.task in LOCATION_BINS and s.has_progress:
                    lo, hi = LOCATION_BINS[s.task].span
                    xz = s.poses[..., :2]
                    if locate_goal_share > 0:
                        xz = np.concatenate([xz.reshape(-1, 2), s.goal_poses[:, :2]])
                    if xz.min() < lo or xz.max() > hi:
                        raise ValueError(
                            f"locate_share > 0 asks where {s.task} frames were taken in bins for the "
                            f"{LOCATION_BINS[s.task].layout} layout, x and z in [{lo:g}, {hi:g}] m, but a shard has "
                            f"poses in [{xz.min():.2f}, {xz.max():.2f}]; train location questions on recordings "
                            f"of that layout only")
        self.shards, self.window, self.rng = shards, window, rng
        T1 = min(s.frames.shape[1] for s in shards)
        if T1 < 2:
            raise ValueError(f"episodes need at least 2 frames, got {T1}")
        # part (rank, ranks): a rank of a distributed run samples every ranks-th episode only.
        self.part = part
        self._index = [(i, e) for i, s in enumerate(shards) for e in range(s.num_episodes)][part[0] :: part[1]]
        if not self._index:
            raise ValueError(f"rank {part[0]} of {part[1]} has no episode: fewer training episodes than ranks")

    def sample_batch(self, n: int) -> list[Clip]:
        return [self.sample() for _ in range(n)]

    def sample(self) -> Clip:
        i, e = self._index[int(self.rng.integers(len(self._index)))]
        s = self.shards[i]
        # 1..window context frames plus the frame to predict after them.
        k = int(self.rng.integers(2, min(self.window + 1, s.frames.shape[1]) + 1))
        t0 = int(self.rng.integers(0, s.frames.shape[1] - k + 1))
        q_idx = int(self.rng.integers(s.qa_q.shape[2])) if s.qa_q.shape[2] else None
        last = t0 + k - 1
        clip = Clip(
            task=s.task,
            frames=s.frames[e, t0 : t0 + k],
            actions=[str(a) for a in s.actions[e, t0 : last]],
            question=None if q_idx is None else str(s.qa_q[e, last, q_idx]),
            answer=None if q_idx is None else str(s.qa_a[e, last, q_idx]),
            key=(i, e, t0),
        )
        if self.locate_share > 0 and s.has_progress and self.rng.random() < self.locate_share:
            from bagel_world.simulator.progress import LOCATE_QUESTIONS, LOCATION_BINS

            if s.task in LOCATION_BINS:
                q = LOCATE_QUESTIONS[int(self.rng.integers(len(LOCATE_QUESTIONS)))]
                if self.locate_goal_share > 0 and self.rng.random() < self.locate_goal_share:
                    clip.frames, clip.key, pose = s.goals[e][None], (i, e, -1), s.goal_poses[e]
                else:
                    clip.frames, clip.key, pose = clip.frames[-1:], (i, e, last), s.poses[e, last]
                clip.actions, clip.question, clip.answer = [], q, LOCATION_BINS[s.task].answer(q, pose)
                return clip
        if s.has_progress and self.progress_share > 0 and self.rng.random() < self.progress_share:
            from bagel_world.simulator.progress import STEP_BINS

            # Every clip has a last step; tasks without step bins are never asked about it.
            step = self.step_share > 0 and s.task in STEP_BINS and self.rng.random() < self.step_share
            clip.goal, clip.question, clip.answer = self._progress_qa(s, e, last, step)
            if not step and self.judge_share > 0 and self.rng.random() < self.judge_share:
                clip.frames, clip.actions, clip.key = clip.frames[-1:], [], (i, e, last)
        return self.maybe_mirror([clip])[0]

    def maybe_mirror(self, clips: list[Clip]) -> list[Clip]:
        """`clips` (of one task), all mirrored with probability `mirror` (no draw when it is 0)."""
        if self.mirror > 0 and clips[0].task in MIRROR_TASKS and self.rng.random() < self.mirror:
            return [mirror_clip(c) for c in clips]
        return clips

    def _progress_qa(self, s: Shard, e: int, t: int, step: bool = False) -> tuple[np.ndarray, str, str]:
        """(goal image, question, answer) about frame t of episode e; with `step`, the question
        is about the step from frame t-1 to t (t >= 1)."""
        from bagel_world.simulator.progress import (
            DISTANCE_BINS,
            DISTANCE_QUESTION,
            REACHED_ANSWERS,
            REACHED_QUESTION,
            STEP_BINS,
            STEP_QUESTION,
        )

        T1 = s.frames.shape[1]
        visible = self._shows_goal_object(s, e)
        if self.progress_rule == "view":  # hindsight goals: frames that would pass as a goal view
            ok = [g for g in range(T1) if self._progress(s, s.poses[e, g], s.poses[e, g], visible[g])[1]]
        else:
            ok = list(range(T1))
        # The episode's own goal (what agents are given) for 30% of the questions, 60% of the
        # step questions; hindsight goals for the rest.
        if self.rng.random() < (0.6 if step else 0.3) or not ok:
            goal, goal_pose = s.goals[e], s.goal_poses[e]
        else:
            near = [g for g in ok if abs(g - t) <= 2]
            pool = near if near and self.rng.random() < 0.5 else ok
            g = pool[int(self.rng.integers(len(pool)))]
            goal, goal_pose = s.frames[e, g], s.poses[e, g]
        dist, reached = self._progress(s, s.poses[e, t], goal_pose, visible[t])
        if step:
            if t < 1:
                raise ValueError(f"a step question needs a step before frame {t}")
            before, _ = self._progress(s, s.poses[e, t - 1], goal_pose, visible[t - 1])
            return goal, STEP_QUESTION, STEP_BINS[s.task].answer(before - dist)
        if self.rng.random() < 0.5:
            return goal, DISTANCE_QUESTION, DISTANCE_BINS[s.task].answer(dist)
        return goal, REACHED_QUESTION, REACHED_ANSWERS[0 if reached else 1]

    def _progress(self, s: Shard, pose: np.ndarray, goal_pose: np.ndarray, visible: bool) -> tuple[float, bool]:
        from bagel_world.sims import pose_progress

        return pose_progress(s.task, pose, goal_pose, self.progress_rule, visible)

    def _shows_goal_object(self, s: Shard, e: int) -> np.ndarray:
        """(T+1,) bool: whether each frame of episode e shows the goal's object, from the recorded
        state answers (all True for the pose rule, which does not ask)."""
        from bagel_world.sims import goal_object_question

        T1 = s.frames.shape[1]
        if self.progress_rule == "pose":
            return np.ones(T1, bool)
        q = goal_object_question(s.task)
        cols = np.flatnonzero(s.qa_q[e, 0] == q) if q is not None else []
        if len(cols) == 0:
            raise ValueError(f"the view rule needs the state question {q!r} in the {s.task} recordings; they lack it")
        return s.qa_a[e, :, cols[0]] == "yes"


class BranchSampler:
    """Trajectory clips mixed with groups of counterfactual clips.

    A share `branch_share` of each batch is made of groups of `group` clips that share one
    recorded state and its history and differ only in the last action (and its real
    outcome). Within a group the history explains nothing of the differences between the
    targets, so the flow loss can only fall by reading the action: the mirror pairs (turn
    left / right) that trajectory data leaves ambiguous get a direct contrast in every batch.

    Where the branch files keep poses, a share (the clip sampler's progress_share x
    step_share) of the groups ask each clip the step question about its action, with the
    episode's goal image: the same contrast for the learned step reward.
    """

    def __init__(self, clips: ClipSampler, branches: list[Branches], branch_share: float = 0.5, group: int = 4):
        if not branches:
            raise ValueError("no branch recordings to sample from; run `bagel-world record --branches N` first")
        if not 0.0 <= branch_share <= 1.0 or group < 2:
            raise ValueError(f"branch_share must be in [0, 1] and group >= 2; got {branch_share}, {group}")
        self.clips, self.branches, self.share, self.group = clips, branches, branch_share, group
        self.rng = clips.rng  # one generator, saved and restored with the training state
        # A rank of a distributed run (the clip sampler's part) keeps every ranks-th state.
        rank, ranks = clips.part
        self._index = [(i, n) for i, b in enumerate(branches) for n in range(b.num_points)][rank::ranks]
        if not self._index:
            raise ValueError(f"rank {rank} of {ranks} has no branch state: fewer branch states than ranks")

    def sample(self) -> Clip:
        return self.clips.sample()

    def sample_batch(self, n: int) -> list[Clip]:
        """n clips; in a distributed run n is this rank's share, and the groups of the global
        batch (as many as one process would draw) are dealt out to the ranks in turn."""
        rank, ranks = self.clips.part
        n_groups = len(range(rank, int(round(n * ranks * self.share)) // self.group, ranks))
        if n_groups * self.group > n:
            raise ValueError(f"a counterfactual group of {self.group} clips does not fit a batch of {n} clips per "
                             "rank; lower --branch-group or raise --batch-size")
        out: list[Clip] = []
        for _ in range(n_groups):
            out += self.sample_group()
        return out + [self.clips.sample() for _ in range(n - len(out))]

    def sample_group(self) -> list[Clip]:
        i, p = self._index[int(self.rng.integers(len(self._index)))]
        b = self.branches[i]
        C, K = b.context.shape[1], len(b.actions)
        c = int(self.rng.integers(1, min(C, self.clips.window) + 1))  # context frames kept
        history = [str(a) for a in b.context_actions[p, C - c :]]
        chosen = self.rng.choice(K, size=min(self.group, K), replace=False)
        group = [Clip(task=b.task, frames=np.concatenate([b.context[p, C - c :], b.outcomes[p, k : k + 1]]),
                      actions=history + [str(b.actions[k])], question=None, answer=None, key=(-1 - i, p, int(k)))
                 for k in chosen]
        if self._asks_steps(b):  # every clip of the group: how much closer its action brought the agent
            from bagel_world.sims import pose_progress
            from bagel_world.simulator.progress import STEP_BINS, STEP_QUESTION

            before = pose_progress(b.task, b.poses[p], b.goal_poses[p], "pose", True)[0]
            for clip, k in zip(group, chosen):
                after = pose_progress(b.task, b.outcome_poses[p, k], b.goal_poses[p], "pose", True)[0]
                clip.goal, clip.question, clip.answer = b.goals[p], STEP_QUESTION, STEP_BINS[b.task].answer(before - after)
        return self.clips.maybe_mirror(group)  # mirrored as a whole: still one state, different actions

    def _asks_steps(self, b: Branches) -> bool:
        """Whether this group asks the step question (with the episode's goal): a share
        progress_share x step_share of the groups of branch files with poses, under the pose rule
        (the view rule's distance needs what each outcome shows, which branches do not keep)."""
        from bagel_world.simulator.progress import STEP_BINS

        c = self.clips
        p = c.progress_share * c.step_share
        return (p > 0 and b.has_progress and b.task in STEP_BINS and c.progress_rule == "pose"
                and self.rng.random() < p)
