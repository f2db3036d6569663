"""What the server holds between requests: the simulator, its worker thread, the batcher,
and the client-visible sessions and env episodes with their idle clocks.

Client ids are random and distinct from the simulator's own ids, so they cannot be
guessed and a restarted simulator never aliases an old session.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bagel_world.server.batcher import Metrics, StepBatcher
from bagel_world.server.errors import ApiError, clip, from_simulator_error
from bagel_world.server.settings import ServerSettings
from bagel_world.simulator.base import Simulator, StepOutput, TaskTemplate
from bagel_world.simulator.scenarios import ScenarioSet

log = logging.getLogger(__name__)


@dataclass
class SessionRecord:
    sim_id: str
    task: str
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0  # requests in flight; a busy session never expires
    owner: str = ""  # the client it counts against (deps.client_key)


@dataclass
class EpisodeRecord:
    env: Any  # gymnasium.Env over a BatchedSimulator
    env_id: str
    frames: list[np.ndarray]  # every observed frame, for the GIF
    rewards: list[float]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: bool = False
    goal: np.ndarray | None = None
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    owner: str = ""


class ServerState:
    def __init__(self, simulator: Simulator, settings: ServerSettings, owns_simulator: bool, id_tag: str = ""):
        self.simulator, self.settings, self.owns_simulator = simulator, settings, owns_simulator
        self.id_tag = id_tag  # put into every session and episode id (a Ray Serve replica's address)
        # One thread runs every simulator call: the model is not re-entrant, and a single
        # worker keeps calls in the order the event loop issued them.
        self.sim_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bagel-sim")
        # Env code (reset/step) blocks on the batcher, so it runs on its own threads.
        self.env_executor = ThreadPoolExecutor(max_workers=max(8, settings.max_batch_size * 2),
                                               thread_name_prefix="bagel-env")
        self.metrics = Metrics()
        self.live_sim_ids: dict[str, str | None] = {}  # every simulator session this server holds -> its task
        self.sessions: dict[str, SessionRecord] = {}
        self.episodes: dict[str, EpisodeRecord] = {}
        self.expired: collections.OrderedDict[str, float] = collections.OrderedDict()  # id -> when
        self._reserved: collections.Counter[str] = collections.Counter()  # owner -> creations in flight
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batcher: StepBatcher | None = None
        self._sweeper: asyncio.Task | None = None
        self._tasks_cache: dict | None = None
        self.closing = False
        self.env_simulator = BatchedSimulator(self)  # one for all episodes: envs cache per simulator

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.batcher = StepBatcher(self.simulator, self.sim_executor, self.settings.max_batch_size,
                                   self.settings.max_batch_wait_ms / 1000.0, self.live_sim_ids.__contains__,
                                   self.metrics, self.live_sim_ids.get)
        self.batcher.start()
        self._sweeper = self.loop.create_task(self._sweep_forever(), name="session-sweeper")

    async def stop(self) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        for eid in list(self.episodes):
            await self._drop_episode(eid)
        for sid in list(self.sessions):
            await self._drop_session(sid)
        self.env_executor.shutdown(wait=False, cancel_futures=True)
        self.sim_executor.shutdown(wait=True, cancel_futures=False)

    # ---- simulator calls -----------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the simulator thread; simulator errors become ApiErrors."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.sim_executor, fn, *args)
        except Exception as exc:
            raise from_simulator_error(exc) from exc

    async def step(self, sim_ids: Sequence[str], actions: Sequence[str], seeds: Sequence[int]) -> list[StepOutput]:
        assert self.batcher is not None
        return await self.batcher.submit(sim_ids, actions, seeds)

    def tasks(self) -> dict:
        if self._tasks_cache is None:
            self._tasks_cache = self.simulator.tasks()
        return self._tasks_cache

    # ---- capacity ------------------------------------------------------------------------
    def reserve(self, owner: str = "") -> None:
        """Claim a slot for a new session/episode of `owner`, or 429 when the server or the
        client's quota is full."""
        s = self.settings
        used = len(self.sessions) + len(self.episodes) + self._reserved.total()
        if used >= s.max_sessions:
            raise ApiError(429, "too_many_sessions",
                           f"the server already holds its maximum of {s.max_sessions} sessions and "
                           f"episodes; close some (DELETE) or wait for idle ones to expire after "
                           f"{s.session_ttl_s:g} s", headers={"Retry-After": "5"})
        held = self._held_by(owner)
        if s.client_quota is not None and len(held) + self._reserved[owner] >= s.client_quota:
            wait = self._retry_after(held)
            raise ApiError(429, "client_quota_exceeded",
                           f"client {clip(owner)} already holds its quota of {s.client_quota} sessions "
                           f"and episodes (max_sessions_per_client); close some (DELETE), or retry in {wait} s, "
                           f"when its least recently used one expires if it stays idle",
                           headers={"Retry-After": str(wait)})
        self._reserved[owner] += 1

    def release(self, owner: str = "") -> None:
        self._reserved[owner] -= 1

    def _held_by(self, owner: str) -> list[SessionRecord | EpisodeRecord]:
        records: list[SessionRecord | EpisodeRecord] = [*self.sessions.values(), *self.episodes.values()]
        return [r for r in records if r.owner == owner]

    def _retry_after(self, held: list[SessionRecord | EpisodeRecord]) -> int:
        """Whole seconds until the least recently used of `held` would expire (at least 1)."""
        if not held:
            return 1
        idle = time.monotonic() - min(r.last_used for r in held)
        return max(1, math.ceil(self.settings.session_ttl_s - idle))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{self.id_tag}{secrets.token_hex(12)}"

    # ---- lookup with idle expiry ---------------------------------------------------------
    def _missing(self, kind: str, cid: str) -> ApiError:
        if cid in self.expired:
            return ApiError(404, f"{kind}_expired", f"{kind} {clip(cid)} expired after {self.settings.session_ttl_s:g} s "
                                                    f"idle and was closed; open a new one")
        return ApiError(404, f"unknown_{kind}", f"unknown {kind} {clip(cid)} (never opened, or closed)")

    def _is_stale(self, rec: SessionRecord | EpisodeRecord, now: float) -> bool:
        # An episode whose lock is held is in use (a fork holds it without counting as busy).
        in_use = rec.busy > 0 or (isinstance(rec, EpisodeRecord) and rec.lock.locked())
        return not in_use and now - rec.last_used > self.settings.session_ttl_s

    async def get_session(self, cid: str) -> SessionRecord:
        rec = self.sessions.get(cid)
        if rec is not None and self._is_stale(rec, time.monotonic()):
            await self._expire_session(cid)
            rec = None
        if rec is None:
            raise self._missing("session", cid)
        rec.last_used = time.monotonic()
        return rec

    async def get_episode(self, cid: str) -> EpisodeRecord:
        rec = self.episodes.get(cid)
        if rec is not None and self._is_stale(rec, time.monotonic()):
            await self._expire_episode(cid)
            rec = None
        if rec is None:
            raise self._missing("episode", cid)
        rec.last_used = time.monotonic()
        return rec

    def _remember_expired(self, cid: str) -> None:
        self.expired[cid] = time.time()
        while len(self.expired) > 10_000:
            self.expired.popitem(last=False)

    async def _expire_session(self, cid: str) -> None:
        log.info("session %s expired after %.0f s idle", cid, self.settings.session_ttl_s)
        self._remember_expired(cid)
        await self._drop_session(cid)

    async def _expire_episode(self, cid: str) -> None:
        log.info("episode %s expired after %.0f s idle", cid, self.settings.session_ttl_s)
        self._remember_expired(cid)
        await self._drop_episode(cid)

    # ---- registration --------------------------------------------------------------------
    def add_session(self, sim_id: str, task: str, owner: str = "") -> str:
        cid = self.new_id("sess")
        self.live_sim_ids[sim_id] = task
        self.sessions[cid] = SessionRecord(sim_id, task, owner=owner)
        return cid

    async def _drop_session(self, cid: str) -> None:
        rec = self.sessions.pop(cid, None)
        if rec is None:
            return
        # Removed from live_sim_ids first, on the loop: a step still queued for it is
        # dropped by the batcher, and one already running finishes before this close.
        self.live_sim_ids.pop(rec.sim_id, None)
        try:
            await self.call(self.simulator.close, rec.sim_id)
        except ApiError as exc:
            log.warning("closing simulator session %s failed: %s", rec.sim_id, exc.message)

    async def close_session(self, cid: str) -> None:
        await self.get_session(cid)
        await self._drop_session(cid)

    async def _drop_episode(self, cid: str) -> None:
        rec = self.episodes.pop(cid, None)
        if rec is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self.env_executor, rec.env.close)
        except Exception as exc:  # closing must not fail the request or the sweep
            log.warning("closing episode %s failed: %s", cid, exc)

    async def close_episode(self, cid: str) -> None:
        await self.get_episode(cid)
        await self._drop_episode(cid)

    async def _sweep_forever(self) -> None:
        period = min(max(self.settings.session_ttl_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(period)
            try:
                now = time.monotonic()
                for cid, rec in list(self.sessions.items()):
                    if self._is_stale(rec, now):
                        await self._expire_session(cid)
                for cid, episode in list(self.episodes.items()):
                    if self._is_stale(episode, now):
                        await self._expire_episode(cid)
            except Exception:  # a sweep must never kill the sweeper
                log.exception("session sweep failed")

    def snapshot(self) -> dict:
        return {
            "sessions": len(self.sessions),
            "episodes": len(self.episodes),
            "max_sessions": self.settings.max_sessions,
            "queue_depth": self.batcher.depth if self.batcher is not None else 0,
            **self.metrics.snapshot(),
        }


class BatchedSimulator(Simulator):
    """The simulator as server-side envs see it: steps go through the batcher.

    Env code runs on `env_executor` threads; `step` hands the request to the event loop's
    batcher and blocks until its batch ran, so env episodes batch with each other and with
    raw sessions. Every other call runs on the simulator thread, in order.
    """

    def __init__(self, state: ServerState):
        self._state = state

    def shipped_scenarios(self, task: str) -> ScenarioSet | None:
        """The real simulator's scenario sets: server-side envs start from them."""
        return self._state.simulator.shipped_scenarios(task)

    def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._state.sim_executor.submit(fn, *args).result()

    def tasks(self) -> dict[str, TaskTemplate]:
        return self._state.tasks()

    def open(self, task: str, frames: Sequence[np.ndarray], prompt: str | None = None) -> str:
        sid = self._sync(self._state.simulator.open, task, frames, prompt)
        self._state.live_sim_ids[sid] = task
        return sid

    def step(self, session_ids: Sequence[str], actions: Sequence[str], seeds: Sequence[int]) -> list[StepOutput]:
        if self._state.closing or self._state.loop is None:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        fut = asyncio.run_coroutine_threadsafe(self._state.step(list(session_ids), list(actions), list(seeds)),
                                               self._state.loop)
        return fut.result()

    def fork(self, session_id: str) -> str:
        sid = self._sync(self._state.simulator.fork, session_id)
        self._state.live_sim_ids[sid] = self._state.live_sim_ids.get(session_id)
        return sid

    def close(self, session_id: str) -> None:
        self._state.live_sim_ids.pop(session_id, None)
        self._sync(self._state.simulator.close, session_id)

    def frame(self, session_id: str) -> np.ndarray:
        return self._sync(self._state.simulator.frame, session_id)

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self._sync(self._state.simulator.embed, frames)

    def ask(self, images: Sequence[np.ndarray], question: str, answers: Sequence[str], **kwargs: Any
            ) -> tuple[np.ndarray, str | None]:
        return self._sync(functools.partial(self._state.simulator.ask, **kwargs), images, question, answers)

    def score(self, session_ids: Sequence[str], question: str, answers: Sequence[str],
              goals: Sequence[np.ndarray] | None = None) -> np.ndarray:
        if goals is None:  # a simulator without goal-conditioned scoring still serves plain questions
            return self._sync(self._state.simulator.score, session_ids, question, answers)
        return self._sync(functools.partial(self._state.simulator.score, goals=goals), session_ids, question, answers)
