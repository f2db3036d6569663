"""A model-free Simulator for testing env, agent and server logic quickly.

Frames are a deterministic function of (previous frame, action, seed), so seeding and
batching properties can be checked without a network. It checks frames as a real backend
does (uint8 (H, W, 3) at the task's resolution) and its scores depend on the question, so a
layer that drops or garbles a frame or a question fails its tests. Tests that need real
model behaviour use the tiny random checkpoint instead.
"""

from __future__ import annotations

import itertools
import time
import zlib
from dataclasses import dataclass

import numpy as np

from bagel_world.simulator.base import Simulator, StepOutput, TaskTemplate


class FakeSimulator(Simulator):
    def __init__(self, templates: dict[str, TaskTemplate]):
        self._templates = dict(templates)
        self._sessions: dict[str, dict] = {}
        self._ids = itertools.count()
        self.step_calls = 0  # how many batched calls were made (to check batching)
        self.score_calls: list[tuple[str, tuple[str, ...], bool]] = []  # (question, answers, with goals)

    def tasks(self):
        return dict(self._templates)

    def open(self, task, frames, prompt=None):
        if task not in self._templates:
            raise ValueError(f"unknown task {task!r}; known: {sorted(self._templates)}")
        tpl = self._templates[task]
        if not 1 <= len(frames) <= tpl.window:
            raise ValueError(f"got {len(frames)} start frames; task {task!r} takes 1 to {tpl.window}")
        for f in frames:
            a = np.asarray(f)
            if a.dtype != np.uint8 or a.shape != (*tpl.resolution, 3):
                raise ValueError(f"a frame of task {task!r} must be {(*tpl.resolution, 3)} uint8, "
                                 f"got {a.shape} {a.dtype}")
        sid = f"s{next(self._ids)}"
        self._sessions[sid] = {"task": task, "frames": [np.asarray(f).copy() for f in frames], "prompt": prompt}
        return sid

    def step(self, session_ids, actions, seeds):
        self.step_calls += 1
        out = []
        for sid, action, seed in zip(session_ids, actions, seeds, strict=True):
            s = self._sessions[sid]
            prev = s["frames"][-1]
            key = zlib.crc32(prev.tobytes() + action.encode() + int(seed).to_bytes(8, "little", signed=False))
            rng = np.random.default_rng(key)
            shift = rng.integers(-8, 9)
            nxt = np.clip(prev.astype(np.int16) + shift + rng.integers(-3, 4, prev.shape), 0, 255).astype(np.uint8)
            s["frames"].append(nxt)
            out.append(StepOutput(frame=nxt.copy(), text=None, latency_s=0.0, frame_index=len(s["frames"]) - 1))
        return out

    def fork(self, session_id):
        s = self._sessions[session_id]
        sid = f"s{next(self._ids)}"
        self._sessions[sid] = {**s, "frames": [f.copy() for f in s["frames"]]}
        return sid

    def close(self, session_id):
        del self._sessions[session_id]

    def frame(self, session_id):
        return self._sessions[session_id]["frames"][-1].copy()

    def embed(self, frames):
        feats = np.stack([np.asarray(f, np.float32)[::8, ::8].reshape(-1) for f in frames])
        feats -= feats.mean(axis=1, keepdims=True)
        return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)

    def score(self, session_ids, question, answers, goals=None):
        """Without goals: answer 0 is as likely as the frame is bright, shifted by a small
        amount that depends on the question (`question_bias`). With goals, a known
        judge: logits -(j - gap * (A-1))^2 for answer j, gap = mean |frame - goal| / 255, so the
        expected answer index grows smoothly with the gap (for two answers, "yes" is the
        likeliest when gap < `REACHED_GAP`)."""
        if goals is not None and len(goals) != len(session_ids):
            raise ValueError("one goal per session")
        self.score_calls.append((question, tuple(answers), goals is not None))
        out = np.zeros((len(session_ids), len(answers)), np.float32)
        for i, sid in enumerate(session_ids):
            frame = self._sessions[sid]["frames"][-1]
            if goals is None:
                m = float(frame.mean()) / 255.0 + self.question_bias(question)
                logits = np.array([m if j == 0 else 1 - m for j in range(len(answers))], np.float32)
            else:
                k = self.judged_answer(frame, goals[i], len(answers))
                logits = -((np.arange(len(answers)) - k) ** 2).astype(np.float32)
            out[i] = logits - np.log(np.exp(logits).sum())
        return out

    def ask(self, images, question, answers, *, captions=None, think=False, max_think_tokens=256,
            length_normalize=False, seed=0):
        """Answer j scores -(j - k)^2 (log-softmaxed), k = the images' mean brightness x (A-1) plus
        the question's bias: a known function of images and question. With `think`, a fixed
        thought that names the question."""
        self.question_bias(question)  # checks it
        for i, img in enumerate(images):
            a = np.asarray(img)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"images[{i}] must be (H, W, 3) uint8, got {a.shape} {a.dtype}")
        if captions is not None and len(captions) != len(images):
            raise ValueError("captions: one per image")
        k = (np.mean([np.asarray(im, np.float64).mean() for im in images]) / 255.0 + self.question_bias(question)) \
            * (len(answers) - 1)
        logits = -((np.arange(len(answers)) - k) ** 2)
        scores = logits - np.log(np.exp(logits).sum())
        if length_normalize:
            scores = scores / np.array([len(a.split()) + 1 for a in answers])
        return scores, (f"thinking about {question!r}" if think else None)

    REACHED_GAP = 0.05

    @staticmethod
    def question_bias(question: str) -> float:
        """0 to 0.1, a function of the question text: scores tell questions apart."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        return (zlib.crc32(question.encode()) % 1000) / 10000.0

    @classmethod
    def judged_answer(cls, frame, goal, n_answers: int) -> float:
        gap = float(np.abs(frame.astype(np.float64) - np.asarray(goal, np.float64)).mean()) / 255.0
        if n_answers == 2:
            return 0.0 if gap < cls.REACHED_GAP else 1.0
        return gap * (n_answers - 1)


class TimedFakeSimulator(FakeSimulator):
    """A fixed cost per step call, whatever its batch size (like a GPU model below its limit)."""

    def __init__(self, templates: dict[str, TaskTemplate], step_ms: float):
        super().__init__(templates)
        self.step_ms = step_ms

    def step(self, session_ids, actions, seeds):
        time.sleep(self.step_ms / 1000.0)
        return super().step(session_ids, actions, seeds)


@dataclass(frozen=True)
class TimedFakeFactory:
    """Builds a `TimedFakeSimulator` over the small default templates; picklable, so a Ray
    Serve replica can build its own (tests and benchmarks put tests/ on the workers' path)."""

    step_ms: float = 0.0

    def __call__(self) -> TimedFakeSimulator:
        from bagel_world.simulator.tasks import default_templates

        return TimedFakeSimulator(default_templates(large=False), self.step_ms)


class LocatingMixin:
    """A rigged location judge for a FakeSimulator (subclass): each location question is
    answered as a sharp distribution over its bins around `place_of(frame)`, the session's
    current frame's [x, z, yaw_deg]; other questions go to the base class."""

    def place_of(self, frame: np.ndarray) -> tuple[float, float, float]:
        """x = 8 m times the frame's mean red level, z = 4 m, heading 90 degrees."""
        return 8.0 * float(frame[..., 0].mean()) / 255.0, 4.0, 90.0

    def score(self, session_ids, question, answers, goals=None):
        from bagel_world.simulator.progress import LOCATE_QUESTIONS

        if question not in LOCATE_QUESTIONS:
            return super().score(session_ids, question, answers, goals)  # type: ignore[misc]
        self.score_calls.append((question, tuple(answers), goals is not None))  # type: ignore[attr-defined]
        centres = np.array([float(a) for a in answers])
        out = np.zeros((len(session_ids), len(answers)), np.float32)
        for i, sid in enumerate(session_ids):
            x, z, yaw = self.place_of(self._sessions[sid]["frames"][-1])  # type: ignore[attr-defined]
            value = [8.0 - x, z, yaw][LOCATE_QUESTIONS.index(question)]  # the green wall is at x = 8 m
            logits = -20.0 * (centres - value) ** 2
            out[i] = logits - np.log(np.exp(logits).sum())
        return out
