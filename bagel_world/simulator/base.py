"""The simulator API: what every backend (local model, HTTP client) implements.

A *session* is one imagined world: a window of recent frames and actions held as model
context. Envs, planners and the HTTP server talk only to this interface, so they run the
same against a local model or a remote one.

Randomness crosses this boundary as integer seeds (one per session per step), not as
`torch.Generator` objects, so that a remote backend produces the same frames as a local
one for the same seeds.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bagel_world.inference.settings import SamplingSettings  # part of the Simulator API (TaskTemplate.sampling)
from bagel_world.simulator.scenarios import ScenarioSet, procedural_scenarios

_CACHE_LOCK = threading.Lock()
CONTEXT_LATENTS = ("reencode", "sampled")


@dataclass(frozen=True)
class TaskTemplate:
    """How a step of one task is phrased to the model.

    The context of a session is: [system prompt] [task prompt] then, for each of the last
    `window` steps, [frame] [action text], and the next frame is generated after the last
    action. `action_format` turns the raw action into the text the model sees.
    """

    name: str
    system_prompt: str
    action_format: str = "{action}"
    canonical_actions: tuple[str, ...] = ()
    window: int = 4
    resolution: tuple[int, int] = (64, 64)  # (H, W) of generated frames
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # Past the window: drop the oldest frame's cache entries (constant cost; for models
    # trained with rope gaps) instead of rebuilding the context from the kept frames.
    slide_window: bool = False
    # The VAE latents a generated frame enters the context with: "reencode" (the decoded
    # frame encoded again, as the official interleaved inference appends a generated image)
    # or "sampled" (the sampler's own final latents: no encoder pass per generated frame).
    context_latents: str = "reencode"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 frame, got {self.window}")
        if self.context_latents not in CONTEXT_LATENTS:
            raise ValueError(f"context_latents must be one of {CONTEXT_LATENTS}, got {self.context_latents!r}")
        if "{action}" not in self.action_format:
            raise ValueError(f"action_format must contain '{{action}}', got {self.action_format!r}")


@dataclass
class StepOutput:
    """Result of stepping one session by one action."""

    frame: np.ndarray  # (H, W, 3) uint8, the generated next frame
    # Text a backend produced with the frame. None from LocalSimulator and the server, which do
    # not think while stepping (BagelInference.interleave_generate(think=True) does, for one prompt).
    text: str | None
    latency_s: float  # wall time of the batched step this session was part of
    frame_index: int  # index of `frame` in the session's history (start frame = 0)


class Simulator(abc.ABC):
    """A batched, forkable world simulator driven by text actions.

    Besides the abstract model calls, envs and agents use two concrete services that every
    backend inherits: `scenarios(task)` (the start and goal scenes the checkpoint ships) and
    `centred_features(task, frames)` (the goal-feature space of the feature rewards).
    """

    # The local folder of the checkpoint this simulator runs, where `scenarios` looks for
    # scenarios/<task>.npz; None when there is none here (a remote backend overrides `scenarios`).
    checkpoint_dir: Path | None = None

    @abc.abstractmethod
    def tasks(self) -> dict[str, TaskTemplate]:
        """Task templates this backend knows, by name."""

    @abc.abstractmethod
    def open(self, task: str, frames: Sequence[np.ndarray], prompt: str | None = None) -> str:
        """Start a session from one or more (H, W, 3) uint8 frames, oldest first (at most the
        task's window); returns its id. The actions between start frames are not known, so
        the model sees those frames follow each other without action text."""

    @abc.abstractmethod
    def step(
        self, session_ids: Sequence[str], actions: Sequence[str], seeds: Sequence[int]
    ) -> list[StepOutput]:
        """Advance each session by one action, all in one model batch."""

    @abc.abstractmethod
    def fork(self, session_id: str) -> str:
        """Copy a session; the copy evolves independently. Returns the new id."""

    @abc.abstractmethod
    def close(self, session_id: str) -> None:
        """Forget a session. Unknown ids raise KeyError."""

    @abc.abstractmethod
    def frame(self, session_id: str) -> np.ndarray:
        """The session's current frame, (H, W, 3) uint8."""

    @abc.abstractmethod
    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-norm features of frames in the model's visual feature space, (B, D) float32."""

    @abc.abstractmethod
    def score(self, session_ids: Sequence[str], question: str, answers: Sequence[str],
              goals: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Log-probability of each answer to `question` about each session's current frame.

        With `goals` (one (H, W, 3) uint8 frame per session), the goal image is shown after
        the current frame and before the question: the goal-conditioned progress questions
        of `bagel_world.simulator.progress`. Returns (len(session_ids), len(answers))
        float32: the model-judged reward path.
        """

    def ask(self, images: Sequence[np.ndarray], question: str, answers: Sequence[str], *,
            captions: Sequence[str] | None = None, think: bool = False, max_think_tokens: int = 256,
            length_normalize: bool = False, seed: int = 0) -> tuple[np.ndarray, str | None]:
        """Understanding without a session: the log-probability of each answer to `question`
        about `images` ((H, W, 3) uint8 each, shown as ViT tokens after their `captions`, as the
        official VLM path does). With `think`, the model first writes its reasoning (at most
        `max_think_tokens`, greedy; `seed` seeds its generator), which precedes the answers. With
        `length_normalize`, each score is divided by its answer's token count (+1 for the
        closing token). Returns ((len(answers),) float64, the reasoning or None).

        Backends with a model implement it (local, remote, the server's); others raise
        NotImplementedError.
        """
        raise NotImplementedError(f"{type(self).__name__} does not answer questions about images")

    # ---- services built on the calls above ---------------------------------------------------
    def shipped_scenarios(self, task: str) -> ScenarioSet | None:
        """The start (and goal) scenes the checkpoint ships for `task`, or None."""
        path = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / "scenarios" / f"{task}.npz"
        return ScenarioSet.load(path) if path is not None and path.is_file() else None

    def scenarios(self, task: str) -> ScenarioSet:
        """The task's start scenes: the checkpoint's set (`shipped_scenarios`), else 64
        procedural scenes at the task's resolution. Loaded once per simulator and shared:
        read-only, copy what you change. Unknown tasks raise KeyError."""
        tasks = self.tasks()
        if task not in tasks:
            raise KeyError(f"unknown task {task!r}; this simulator has {sorted(tasks)}")
        cache = self._service_cache("scenarios")
        with self._service_lock():
            if task in cache:
                return cache[task]
            shipped = self.shipped_scenarios(task)
            H, W = tasks[task].resolution
            cache[task] = shipped if shipped is not None else procedural_scenarios(task, (H, W))
        return cache[task]

    def feature_mean(self, task: str) -> np.ndarray:
        """Mean feature (D,) of the task's scenario frames and goals: the centre of `centred_features`."""
        cache = self._service_cache("feature_mean")
        with self._service_lock():  # computed once even when envs are made from several threads
            if task in cache:
                return cache[task]
            s = self.scenarios(task)
            frames = list(s.frames) + (list(s.goals) if s.goals is not None else [])
            cache[task] = np.asarray(self.embed(frames), np.float32).mean(axis=0)
        return cache[task]

    def centred_features(self, task: str, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Unit features (B, D) of frames after subtracting `feature_mean(task)`.

        Mean-pooled ViT features share a large common component (two unrelated scenes score
        ~0.95 raw cosine on the small model); centred on the task's scenes, unrelated scenes
        score near 0. The goal space of the feature rewards of envs and planners.
        """
        f = np.asarray(self.embed(list(frames)), np.float32) - self.feature_mean(task)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)

    def _service_cache(self, name: str) -> dict:
        # Per instance, made on first use (subclasses need not call an __init__ here).
        with _CACHE_LOCK:
            return vars(self).setdefault(f"_cache_{name}", {})

    def _service_lock(self) -> threading.RLock:
        with _CACHE_LOCK:
            return vars(self).setdefault("_cache_lock", threading.RLock())

    def __getstate__(self) -> dict:
        # Pickling (e.g. to a spawned vector-env worker) leaves the caches and their lock behind.
        return {k: v for k, v in vars(self).items() if not k.startswith("_cache_")}

    def close_all(self) -> None:  # noqa: B027  a hook with a default, not an abstract method
        """Forget every session (backends that hold sessions override this)."""

    def __deepcopy__(self, memo):
        # A simulator owns a model (or a connection) and is shared, never copied: Gymnasium
        # deep-copies `gym.make` kwargs into env.spec, and `simulator=` is one of them.
        return self
