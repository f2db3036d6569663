"""Goal-conditioned progress questions: how the model is asked how far a goal view is.

The understanding path is trained (`bagel-world train`, from recorded simulator ground
truth) and asked (`Simulator.score(..., goals=...)`) the same two questions, with the goal
image appended to the session's context right before the question:

  [... current frame] [goal frame] "How far away is the goal view?"  -> a distance bin
  [... current frame] [goal frame] "Have you reached the goal view?" -> "yes" / "no"

and a third, about the last step (a learned reward head, as DIAMOND and Dreamer learn one),
asked of a session whose context ends with [previous frame] [action] [new frame]:

  [... previous frame, action, new frame] [goal frame]
      "How much closer to the goal view did that step bring you?"  -> a signed change bin

A distance answer is the centre of its bin written as a number ("0.25", ..., "7"), so the
judged *expected* distance is the probability-weighted mean of the bin centres. The same
questions are asked zero-shot of BAGEL-7B-MoT.

Location questions ask a single frame, with no goal, where in the room it was taken:

  [frame] "How far are you from the green wall?"  -> a 0.5 m bin (the wall at max x)
  [frame] "How far are you from the blue wall?"   -> a 0.5 m bin (the wall at min z)
  [frame] "Which way are you facing?"             -> a 15 degree bin of the heading

Asked of the current frame and of the goal image alike, they give a judged distance between the
two that needs no relational reasoning: `located_distance` (the planner's `metric="located"`).
Their bins cover one layout's floor (`LOCATION_BINS`: the 8 m one room) and the walls are named
by the colour of their panels (`landmarks=True`), which also make every view's place readable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

DISTANCE_QUESTION = "How far away is the goal view?"
STEP_QUESTION = "How much closer to the goal view did that step bring you?"
REACHED_QUESTION = "Have you reached the goal view?"
REACHED_ANSWERS = ("yes", "no")


@dataclass(frozen=True)
class DistanceBins:
    """Bins of the real distance to the goal: edges (ascending) and the centre of each bin."""

    unit: str
    edges: tuple[float, ...]
    centres: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.centres) != len(self.edges) + 1 or list(self.edges) != sorted(self.edges):
            raise ValueError(f"need ascending edges and one more centre than edges, got {self.edges}, {self.centres}")

    @property
    def answers(self) -> tuple[str, ...]:
        return tuple(f"{c:g}" for c in self.centres)

    def answer(self, distance: float) -> str:
        """The answer of the bin that holds `distance`."""
        return self.answers[int(np.searchsorted(self.edges, distance, side="right"))]

    def expected(self, logp: np.ndarray) -> np.ndarray:
        """(...,) judged expected distance from (..., bins) answer log-probabilities."""
        p = np.exp(logp - logp.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return (p * np.asarray(self.centres, np.float64)).sum(-1)  # row by row: batch-size independent


# Tasks with a trained progress judge. Navigate: metres between the agent and the goal pose.
DISTANCE_BINS: dict[str, DistanceBins] = {
    "navigate": DistanceBins("m", (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0)),
}

# Bins of how much closer the last step brought the agent (distance before minus after, so
# positive is closer). Navigate's canonical moves are 0.5 m and its turns leave the distance
# unchanged; the recordings also hold moves of 0.25-1.5 m.
STEP_BINS: dict[str, DistanceBins] = {
    "navigate": DistanceBins("m", (-0.6, -0.35, -0.15, -0.03, 0.03, 0.15, 0.35, 0.6),
                             (-0.8, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 0.8)),
}


LOCATE_QUESTIONS = ("How far are you from the green wall?", "How far are you from the blue wall?",
                    "Which way are you facing?")


@dataclass(frozen=True)
class LocationBins:
    """Bins of a frame's place: the distances to the walls at max x and min z (`position`, in m;
    `LOCATE_QUESTIONS` name them by their panels' colours) over one layout's square floor, and the
    heading in `yaw_step`-degree bins centred on multiples of it (answers "0", "15", ..., "345")."""

    layout: str
    position: DistanceBins
    yaw_step: int

    @property
    def span(self) -> tuple[float, float]:
        """The floor the position bins cover: (first edge - a bin, last edge + a bin)."""
        e, w = self.position.edges, self.position.edges[1] - self.position.edges[0]
        return e[0] - w, e[-1] + w

    @property
    def yaw_answers(self) -> tuple[str, ...]:
        return tuple(str(d) for d in range(0, 360, self.yaw_step))

    def answers(self, question: str) -> tuple[str, ...]:
        if question not in LOCATE_QUESTIONS:
            raise ValueError(f"unknown location question {question!r}; accepted: {list(LOCATE_QUESTIONS)}")
        return self.yaw_answers if question == LOCATE_QUESTIONS[2] else self.position.answers

    def answer(self, question: str, pose) -> str:
        """The answer to `question` about a pose [x, z, yaw_deg, ...]."""
        if question == LOCATE_QUESTIONS[2]:
            return self.yaw_answers[int(np.round((float(pose[2]) % 360.0) / self.yaw_step)) % len(self.yaw_answers)]
        lo, hi = self.span
        if question == LOCATE_QUESTIONS[0]:
            return self.position.answer(hi - float(pose[0]))
        return self.position.answer(float(pose[1]) - lo)

    def place(self, green: np.ndarray, blue: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """(..., 3) [x, z, yaw_deg] from the distances to the green and blue walls and the heading."""
        lo, hi = self.span
        return np.stack([hi - np.asarray(green), lo + np.asarray(blue), np.asarray(yaw)], -1)

    def expected_yaw(self, logp: np.ndarray) -> np.ndarray:
        """(...,) judged heading in degrees [0, 360): the circular mean of the bin centres."""
        p = np.exp(logp - logp.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        rad = np.deg2rad(np.arange(0, 360, self.yaw_step, dtype=np.float64))
        return np.rad2deg(np.arctan2((p * np.sin(rad)).sum(-1), (p * np.cos(rad)).sum(-1))) % 360.0


# Tasks whose frames can be located, with the layout the bins are for: navigate's one room
# (MiniWorld OneRoom, size 8, floor x, z in [0, 8] m; the agent stays in 0.4-7.6 m) with its wall
# panels (`landmarks=True`: green at max x, blue at min z).
LOCATION_BINS: dict[str, LocationBins] = {
    "navigate": LocationBins("one_room", DistanceBins("m", tuple(np.arange(0.5, 8.0, 0.5).tolist()),
                                                      tuple(np.arange(0.25, 8.0, 0.5).tolist())), 15),
}


def judge_location(sim, task: str, session_ids) -> np.ndarray:
    """(B, 3) judged [x, z, yaw_deg] of each session's current frame: one `score` call per
    question for the batch (the sessions are not changed)."""
    if task not in LOCATION_BINS:
        raise ValueError(f"task {task!r} has no location judge; tasks with one: {sorted(LOCATION_BINS)}")
    bins, sids = LOCATION_BINS[task], list(session_ids)
    out = []
    for q in LOCATE_QUESTIONS:
        logp = np.asarray(sim.score(sids, q, bins.answers(q)), np.float64)
        out.append(bins.expected_yaw(logp) if q == LOCATE_QUESTIONS[2] else bins.position.expected(logp))
    return bins.place(*out)


def judge_location_frames(sim, task: str, frames) -> np.ndarray:
    """(B, 3) judged [x, z, yaw_deg] of each frame, each in a fresh one-frame session."""
    if task not in LOCATION_BINS:
        raise ValueError(f"task {task!r} has no location judge; tasks with one: {sorted(LOCATION_BINS)}")
    with frame_sessions(sim, task, frames) as sids:
        return judge_location(sim, task, sids)


def located_distance(located: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(metres, heading error in degrees [0, 180]) between located frames (B, 3) and a located
    goal (3,) or (B, 3)."""
    located, goal = np.asarray(located, np.float64), np.asarray(goal, np.float64)
    d = np.hypot(located[..., 0] - goal[..., 0], located[..., 1] - goal[..., 1])
    yaw = np.abs((located[..., 2] - goal[..., 2] + 180.0) % 360.0 - 180.0)
    return d, yaw


# The located distance's metres per 180 degrees of heading error: 3 makes the pose rule's two
# radii weigh the same (30 degrees count as 0.5 m). A planner on a CNN localiser's places of the
# real outcomes (examples/probe_localisation.py, validation seeds 200-219) reached the goal in
# 5/20 episodes at 0.5, 14/20 at 2 and at 4: a light weight leaves the heading to chance once
# the place is near, though the heading is read far more precisely than the place.
LOCATED_YAW_WEIGHT = 3.0


def pose_distance(metres, yaw_deg, yaw_weight: float = LOCATED_YAW_WEIGHT):
    """The located distance a planner or reward uses: `metres` plus `yaw_weight` metres per 180
    degrees of heading error (`yaw_deg`, as `located_distance` gives them)."""
    return metres + yaw_weight * np.asarray(yaw_deg, np.float64) / 180.0


@contextmanager
def frame_sessions(sim, task: str, frames) -> Iterator[list[str]]:
    """A fresh one-frame session per frame (the layout the one-frame judges are trained in),
    closed on exit."""
    sids = [sim.open(task, [f]) for f in frames]
    try:
        yield sids
    finally:
        for sid in sids:
            sim.close(sid)


def reached_probability(logp: np.ndarray) -> np.ndarray:
    """(...,) P("yes") from (..., 2) log-probabilities of `REACHED_ANSWERS`, renormalised."""
    p = np.exp(logp - logp.max(-1, keepdims=True))
    return p[..., 0] / p.sum(-1)


def judge_distance(sim, task: str, session_ids, goals) -> np.ndarray:
    """(B,) judged expected distance to the goal of each session's current frame: one `score`
    call for the batch (the goal and question go to forks; the sessions are not changed)."""
    bins = DISTANCE_BINS[task]
    return bins.expected(np.asarray(sim.score(list(session_ids), DISTANCE_QUESTION, bins.answers, goals=list(goals)),
                                    np.float64))


def judge_reached(sim, session_ids, goals) -> np.ndarray:
    """(B,) judged P(the goal is reached) of each session's current frame: one `score` call."""
    return reached_probability(np.asarray(sim.score(list(session_ids), REACHED_QUESTION, REACHED_ANSWERS,
                                                    goals=list(goals)), np.float64))


def judge_frames(sim, task: str, frames, goals, reached: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(judged expected distance (B,), P(reached) (B,) or None) of each frame against its goal.

    Each frame gets a fresh one-frame session (opened, scored, closed); one `score` call per
    question for the whole batch.
    """
    if task not in DISTANCE_BINS:
        raise ValueError(f"task {task!r} has no progress judge; tasks with one: {sorted(DISTANCE_BINS)}")
    with frame_sessions(sim, task, frames) as sids:
        d = judge_distance(sim, task, sids, goals)
        p = judge_reached(sim, sids, goals) if reached else None
    return d, p


def judge_steps(sim, task: str, session_ids, goals) -> np.ndarray:
    """(B,) judged expected change of distance (positive: closer) of each session's last step.

    Each session's context must end with a step (`Simulator.step`): its question is about the
    frame before, the action and the frame after. One `score` call for the whole batch; the
    sessions themselves are not changed (the goal and question go to forks).
    """
    if task not in STEP_BINS:
        raise ValueError(f"task {task!r} has no step-progress judge; tasks with one: {sorted(STEP_BINS)}")
    bins = STEP_BINS[task]
    return bins.expected(np.asarray(sim.score(list(session_ids), STEP_QUESTION, bins.answers, goals=list(goals)),
                                    np.float64))
