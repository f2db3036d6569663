"""The model-backed simulator: sessions are BAGEL contexts stepped in batches.

A session's context follows the official editing layout, with the world's history as
the interleaved inputs:

    [system prompt] [task prompt] (frame, action)* frame action  -> next frame

and the three guidance contexts of `interleave_inference`: conditional (all of it),
text-free (everything before the last action) and image-free (the texts only). Only the
last `window` frames stay in context: when a step would exceed it, the context is rebuilt
from the kept frames (their stored latents, so nothing is re-sampled), which bounds the
cost of a step whatever the episode length.

After a frame is generated it is appended back as a clean VAE block plus a ViT block at
the same rope position rule the official code uses for inputs (upstream
`inferencer.py :: InterleaveInferencer.update_context_image`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bagel_world.forking import mark_unforkable
from bagel_world.inference.context import Context
from bagel_world.inference.engine import BagelInference
from bagel_world.simulator.base import Simulator, StepOutput, TaskTemplate
from bagel_world.simulator.tasks import templates_for_checkpoint

log = logging.getLogger(__name__)

# Largest rope distance between the task text and the newest frame before a sliding
# session is rebuilt (training draws gaps up to 1024 and the window itself spans ~40).
REBASE_GAP = 768


@dataclass
class _Frame:
    pixels: np.ndarray  # (H, W, 3) uint8
    latents: torch.Tensor  # (N, 64) clean latent tokens as appended (posterior sample)


@dataclass
class _Session:
    task: str
    prompt: str | None
    frames: list[_Frame]  # the kept window, oldest first
    actions: list[str | None]  # actions between kept frames: len(frames) - 1; None: not known (start frames)
    base: Context  # everything up to and including the last frame (= next text-free ctx)
    text_only: Context  # system + prompt + kept actions (= next image-free ctx)
    head: Context | None = None  # system prompt + task prompt: built once, forked by every rebuild
    frame_index: int = 0
    # (base it was built on, goal bytes, base + goal image): the questions asked about one
    # state with one goal (the judged reward asks two) share the goal's append.
    goal_ctx: tuple[Context, bytes, Context] | None = None
    # (goal bytes, its VAE latents): a goal is encoded once per session, not once per state.
    goal_latents: tuple[bytes, torch.Tensor] | None = None


class LocalSimulator(Simulator):
    """Simulator on a loaded `BagelInference`; thread-safe (one model call at a time)."""

    in_process_model = True  # a child made by fork() cannot use it (bagel_world.forking)

    def __init__(self, engine: BagelInference, templates: dict[str, TaskTemplate] | None = None):
        mark_unforkable("torch", "a BAGEL model in torch")
        self.engine = engine
        self.checkpoint_dir = engine.checkpoint_dir
        large = engine.config.llm.hidden_size >= 2048
        self._templates = templates if templates is not None else templates_for_checkpoint(self.checkpoint_dir, large)
        self._sessions: dict[str, _Session] = {}
        self._ids = itertools.count()
        self._lock = threading.RLock()

    # ---- Simulator API -----------------------------------------------------------------
    def tasks(self) -> dict[str, TaskTemplate]:
        return dict(self._templates)

    def open(self, task: str, frames: Sequence[np.ndarray], prompt: str | None = None) -> str:
        tpl = self._template(task)
        frames = [self._check_frame(f, tpl) for f in frames]
        if not frames:
            raise ValueError("open() needs at least one start frame")
        if len(frames) > tpl.window:
            raise ValueError(f"got {len(frames)} start frames; task {task!r} keeps at most {tpl.window} (its window)")
        # Start frames are encoded with a generator seeded from their bytes: the same
        # start frames always give the same context.
        seed = zlib.crc32(b"".join(f.tobytes() for f in frames))
        gen = torch.Generator().manual_seed(seed)
        with self._lock, torch.no_grad():
            kept = [_Frame(f, self.engine.encode_image(self.engine.prepare_image(f), gen)) for f in frames]
            # The actions between start frames are not known: those frames follow each other
            # with no action text, the text-free layout that training's action dropout shows.
            s = _Session(task=task, prompt=prompt, frames=kept, actions=[None] * (len(kept) - 1),
                         base=None, text_only=None)  # type: ignore[arg-type]
            self._rebuild([s])
            s.frame_index = len(frames) - 1
            sid = f"sess-{next(self._ids)}"
            self._sessions[sid] = s
        return sid

    def step(self, session_ids: Sequence[str], actions: Sequence[str], seeds: Sequence[int]) -> list[StepOutput]:
        if not (len(session_ids) == len(actions) == len(seeds)):
            raise ValueError(
                f"step needs one action and one seed per session; got {len(session_ids)} sessions, "
                f"{len(actions)} actions, {len(seeds)} seeds"
            )
        if len(set(session_ids)) != len(session_ids):
            raise ValueError("a session may appear only once per step call")
        sessions = [self._get(sid) for sid in session_ids]
        texts = [self._action_text(s, a) for s, a in zip(sessions, actions)]
        outputs: list[StepOutput | None] = [None] * len(sessions)
        with self._lock:
            t0 = time.perf_counter()
            # Sessions of different tasks may differ in size and settings: one batch per group.
            groups: dict[str, list[int]] = {}
            for i, s in enumerate(sessions):
                groups.setdefault(s.task, []).append(i)
            for task, idx in groups.items():
                self._step_group(task, [sessions[i] for i in idx], [texts[i] for i in idx], [int(seeds[i]) for i in idx])
            for s in sessions:
                s.goal_ctx = None  # built on the previous state: release its cache
            latency = time.perf_counter() - t0
        for i, s in enumerate(sessions):
            outputs[i] = StepOutput(frame=s.frames[-1].pixels.copy(), text=None, latency_s=latency, frame_index=s.frame_index)
        return outputs  # type: ignore[return-value]

    def fork(self, session_id: str) -> str:
        with self._lock:
            s = self._get(session_id)
            c = _Session(
                task=s.task, prompt=s.prompt, frames=list(s.frames), actions=list(s.actions),
                base=s.base.fork(), text_only=s.text_only.fork(), head=s.head, frame_index=s.frame_index,
            )
            sid = f"sess-{next(self._ids)}"
            self._sessions[sid] = c
        return sid

    def close(self, session_id: str) -> None:
        with self._lock:
            if session_id not in self._sessions:
                raise KeyError(f"unknown session {session_id!r}")
            del self._sessions[session_id]

    def close_all(self) -> None:
        with self._lock:
            self._sessions.clear()

    def frame(self, session_id: str) -> np.ndarray:
        return self._get(session_id).frames[-1].pixels.copy()

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, self.engine.config.vit.hidden_size), np.float32)
        with self._lock:
            return self.engine.image_features(list(frames)).cpu().numpy().astype(np.float32)

    def score(self, session_ids: Sequence[str], question: str, answers: Sequence[str],
              goals: Sequence[np.ndarray] | None = None) -> np.ndarray:
        _check_question(question)
        sessions = [self._get(sid) for sid in session_ids]
        if goals is not None:
            if len(goals) != len(sessions):
                raise ValueError(f"score needs one goal frame per session; got {len(goals)} for {len(sessions)}")
            goals = [self._check_frame(g, self._template(s.task)) for g, s in zip(goals, sessions)]
        with self._lock, torch.no_grad():
            ctxs = [s.base.fork() for s in sessions] if goals is None else self._goal_contexts(sessions, goals)
            self.engine.append_text(ctxs, [question] * len(ctxs))
            return self.engine.score_answers(ctxs, list(answers)).numpy().astype(np.float32)

    def ask(self, images: Sequence[np.ndarray], question: str, answers: Sequence[str], *,
            captions: Sequence[str] | None = None, think: bool = False, max_think_tokens: int = 256,
            length_normalize: bool = False, seed: int = 0) -> tuple[np.ndarray, str | None]:
        _check_question(question)
        if not answers or not all(isinstance(a, str) and a for a in answers):
            raise ValueError(f"answers must be a non-empty list of non-empty strings, got {answers!r}")
        if captions is not None and len(captions) != len(images):
            raise ValueError(f"captions: one per image; got {len(captions)} for {len(images)} images")
        if max_think_tokens < 1:
            raise ValueError(f"max_think_tokens must be >= 1, got {max_think_tokens!r}")
        inputs: list = []
        for i, img in enumerate(images):
            inputs += ([captions[i]] if captions is not None else []) + [_check_rgb(img, f"images[{i}]")]
        inputs.append(question)
        eng = self.engine
        with self._lock, torch.no_grad():
            # 1. The understanding context (ViT tokens only, as the official VLM path).
            ctx, _, _ = eng.build_contexts(inputs, think=think, understanding=True)
            # 2. Optional reasoning, appended as the model's own turn.
            thought = None
            if think:
                gen = torch.Generator().manual_seed(int(seed))
                thought = eng.generate_text(ctx, max_length=max_think_tokens, generator=gen)[0]
                eng.append_text(ctx, thought)
            # 3. Every answer scored: log P(answer tokens and the closing token).
            scores = eng.score_answers(ctx, list(answers))[0].double().numpy()
            if length_normalize:
                scores = scores / np.array([len(eng.tokenize(a)) + 1 for a in answers])
        return scores, thought

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    # ---- internals ---------------------------------------------------------------------
    def _template(self, task: str) -> TaskTemplate:
        if task not in self._templates:
            raise ValueError(f"unknown task {task!r}; this simulator knows {sorted(self._templates)}")
        return self._templates[task]

    def _get(self, sid: str) -> _Session:
        try:
            return self._sessions[sid]
        except KeyError:
            raise KeyError(f"unknown session {sid!r} (closed, expired or never opened)") from None

    @staticmethod
    def _check_frame(f, tpl: TaskTemplate) -> np.ndarray:
        a = _check_rgb(f, "a frame")
        if a.shape[:2] != tuple(tpl.resolution):
            raise ValueError(
                f"frame of {a.shape[1]}x{a.shape[0]} px (WxH) does not match task {tpl.name!r}, "
                f"which runs at {tpl.resolution[1]}x{tpl.resolution[0]}"
            )
        return a

    def _goal_contexts(self, sessions: list[_Session], goals: list[np.ndarray]) -> list[Context]:
        """Each session's context with its goal image appended, forked for one question.

        The goal is appended once per session state and goal: a second question about the
        same state and goal (the judged reward asks two) forks the cached context. Its VAE
        draw is seeded from the goal's bytes like start frames (the same goal, the same
        latents), so the latents are encoded once per session and goal and reused by every
        later state; only the model's pass over them is per state.
        """
        keys = [g.tobytes() for g in goals]
        missing = [i for i, (s, k) in enumerate(zip(sessions, keys))
                   if s.goal_ctx is None or s.goal_ctx[0] is not s.base or s.goal_ctx[1] != k]
        if missing:
            eng = self.engine
            encode = [i for i in missing if sessions[i].goal_latents is None or sessions[i].goal_latents[0] != keys[i]]
            if encode:
                gens = [torch.Generator().manual_seed(zlib.crc32(keys[i])) for i in encode]
                lat = eng.encode_images([eng.prepare_image(goals[i]) for i in encode], gens)
                for i, z in zip(encode, lat):
                    sessions[i].goal_latents = (keys[i], z)
            fresh = {i: sessions[i].base.fork() for i in missing}
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i in missing:
                by_shape.setdefault(tuple(self._template(sessions[i].task).resolution), []).append(i)
            for shape, idx in by_shape.items():  # the official order: VAE latents, then ViT tokens
                eng.append_latents([fresh[i] for i in idx],
                                   torch.stack([sessions[i].goal_latents[1] for i in idx]), shape)  # type: ignore[index]
            eng.append_image([fresh[i] for i in missing], [goals[i] for i in missing], vae=False, vit=True)
            for i in missing:
                sessions[i].goal_ctx = (sessions[i].base, keys[i], fresh[i])
        return [s.goal_ctx[2].fork() for s in sessions]  # type: ignore[index]

    def _action_text(self, s: _Session, action: str) -> str:
        if not isinstance(action, str) or not action.strip():
            raise ValueError(f"action must be a non-empty string, got {action!r}")
        return self._templates[s.task].action_format.format(action=action.strip())

    def _rebuild(self, sessions: list[_Session]) -> None:
        """Build base/text-only contexts from system prompt, prompt and the kept window.

        Sessions with the same number of kept frames are rebuilt together: one batched
        model call per appended block (action text, latents, ViT tokens) for all of them,
        instead of one call per session and block.
        """
        eng = self.engine
        for s in sessions:
            if s.head is None:
                s.head = eng.new_context()
                tpl = self._templates[s.task]
                for h in [tpl.system_prompt] + ([s.prompt] if s.prompt else []):
                    eng.append_text(s.head, h)
        groups: dict[tuple, list[_Session]] = {}
        for s in sessions:
            groups.setdefault((len(s.frames), s.frames[0].pixels.shape[:2]), []).append(s)
        for (n, shape), group in groups.items():
            bases = [s.head.fork() for s in group]
            text_only = [s.head.fork() for s in group]
            for i in range(n):
                if i > 0:
                    known = [(b, t, s.actions[i - 1]) for s, b, t in zip(group, bases, text_only)
                             if s.actions[i - 1] is not None]
                    if known:
                        kb, kt, acts = (list(x) for x in zip(*known))
                        eng.append_text(kb + kt, acts + acts)
                eng.append_latents(bases, torch.stack([s.frames[i].latents for s in group]), shape)
                eng.append_image(bases, [s.frames[i].pixels for s in group], vae=False, vit=True)
            for s, b, t in zip(group, bases, text_only):
                s.base, s.text_only = b, t

    def _step_group(self, task: str, sessions: list[_Session], texts: list[str], seeds: list[int]) -> None:
        eng, tpl = self.engine, self._templates[task]
        gens = [torch.Generator().manual_seed(sd) for sd in seeds]
        # 1. Guidance contexts: text-free = base; conditional = base + action; image-free =
        #    texts + action.
        cond = [s.base.fork() for s in sessions]
        img_free = [s.text_only.fork() for s in sessions]
        eng.append_text(cond + img_free, texts + texts)
        # 2. One batched sampling run for the whole group.
        res = eng.generate_image(
            cond, [s.base for s in sessions], img_free,
            image_shape=tuple(tpl.resolution), settings=tpl.sampling, generators=gens,
        )
        # 3. Append the new frames: VAE latents (the decoded frame re-encoded with the same
        #    generators, or the sampled latents as they are), then ViT.
        if tpl.context_latents == "sampled":
            lat = res.latents.to(eng.vae_device, torch.float32)
        else:
            lat = eng.encode_images([eng.prepare_image(img) for img in res.images], gens)
        new_frames = [_Frame(img, z) for img, z in zip(res.images, lat)]
        if tpl.slide_window:
            self._slide(tpl, sessions, new_frames, texts, cond, img_free)
            return
        overflow = [len(s.frames) + 1 > tpl.window for s in sessions]
        for s, fr, t, c, tf, over in zip(sessions, new_frames, texts, cond, img_free, overflow):
            s.frames.append(fr)
            s.actions.append(t)
            s.frame_index += 1
            if over:
                s.frames, s.actions = s.frames[-tpl.window :], s.actions[-(tpl.window - 1) :] if tpl.window > 1 else []
            else:
                s.base, s.text_only = c, tf
        keep = [s for s, over in zip(sessions, overflow) if not over]
        if keep:
            shape = tuple(tpl.resolution)
            eng.append_latents([s.base for s in keep], torch.stack([s.frames[-1].latents for s in keep]), shape)
            eng.append_image([s.base for s in keep], [s.frames[-1].pixels for s in keep], vae=False, vit=True)
        rebuild = [s for s, over in zip(sessions, overflow) if over]
        if rebuild:
            self._rebuild(rebuild)

    def _slide(self, tpl: TaskTemplate, sessions: list[_Session], new_frames: list[_Frame], texts: list[str],
               cond: list[Context], img_free: list[Context]) -> None:
        """Append each new frame to its conditional context (the next base); past the window,
        drop the oldest frame and its action from the cache instead of rebuilding it.

        The cost of a step stays constant once the window is full. Kept keys keep their
        rope positions, so the task text drifts away from the frames; models trained with
        `rope_gap` have seen that. A rebuild resets the positions when the drift would pass
        `REBASE_GAP` (once every ~80 steps of a long session).
        """
        eng = self.engine
        eng.append_latents(cond, torch.stack([f.latents for f in new_frames]), tuple(tpl.resolution))
        eng.append_image(cond, [f.pixels for f in new_frames], vae=False, vit=True)
        rebuild = []
        for s, fr, t, c, tf in zip(sessions, new_frames, texts, cond, img_free):
            s.frames.append(fr)
            s.actions.append(t)
            s.frame_index += 1
            h = len(s.head.segments)
            if len(s.frames) > tpl.window:
                # The oldest frame [vae, vit] and the action after it, if it is known (a start
                # frame's is not): base loses [vae, vit, action], text-only [action].
                known = s.actions[0] is not None
                s.frames, s.actions = s.frames[1:], s.actions[1:]
                c = c.drop_segments(h, 2 + known)
                if known:
                    tf = tf.drop_segments(h, 1)
            s.base, s.text_only = c, tf
            if c.rope - s.head.rope > REBASE_GAP:
                rebuild.append(s)
        if rebuild:
            self._rebuild(rebuild)


def _check_question(question) -> None:
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")


def _check_rgb(f, name: str) -> np.ndarray:
    """`f` as a contiguous (H, W, 3) uint8 array, or a ValueError naming `name`."""
    a = np.asarray(f)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 array, got shape {a.shape} dtype {a.dtype}")
    return np.ascontiguousarray(a)
