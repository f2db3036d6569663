"""Dynamic batching: concurrent step requests become one `Simulator.step` call.

Requests wait in an asyncio queue. The batching loop takes the first one, then gathers
more for at most `max_wait_s` or until `max_batch_size`, and runs the batch on the
simulator's single worker thread (the event loop never blocks on the model). While a
batch runs, new requests pile up and form the next one. A session appears at most once
per batch: a second step of the same session waits for the next batch, in order.
A batch is one simulator call per task; when a call fails, its members are retried one
by one, so a failure reaches only the request that causes it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from bagel_world.server.errors import ApiError, from_simulator_error
from bagel_world.simulator.base import Simulator, StepOutput

log = logging.getLogger(__name__)


@dataclass
class _Item:
    sim_id: str
    action: str
    seed: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Metrics:
    """Counters and recent latencies for /v1/metrics."""

    def __init__(self, window: int = 2048):
        self.batches_run = 0
        self.steps_run = 0
        self.steps_failed = 0
        self.step_latency_s: collections.deque[float] = collections.deque(maxlen=window)  # queue + model
        self.batch_latency_s: collections.deque[float] = collections.deque(maxlen=window)  # model only

    def snapshot(self) -> dict:
        def pct(values, q):
            return float(np.percentile(np.asarray(values), q) * 1000.0) if values else None

        return {
            "batches_run": self.batches_run,
            "steps_run": self.steps_run,
            "steps_failed": self.steps_failed,
            "mean_batch_size": self.steps_run / self.batches_run if self.batches_run else 0.0,
            "step_latency_ms_p50": pct(self.step_latency_s, 50),
            "step_latency_ms_p95": pct(self.step_latency_s, 95),
            "batch_latency_ms_p50": pct(self.batch_latency_s, 50),
            "batch_latency_ms_p95": pct(self.batch_latency_s, 95),
        }


class StepBatcher:
    def __init__(self, simulator: Simulator, executor: Executor, max_batch_size: int, max_wait_s: float,
                 is_alive: Callable[[str], bool], metrics: Metrics,
                 task_of: Callable[[str], str | None] = lambda sim_id: None):
        self.simulator, self.executor = simulator, executor
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.is_alive, self.metrics, self.task_of = is_alive, metrics, task_of
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._deferred: collections.deque[_Item] = collections.deque()  # same-session repeats, in order
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._deferred)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="step-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        pending = list(self._deferred)
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(ApiError(503, "shutting_down", "the server is shutting down"))

    async def submit(self, sim_ids: Sequence[str], actions: Sequence[str], seeds: Sequence[int]) -> list[StepOutput]:
        """Queue one step per session and wait for all of them (possibly across batches)."""
        if self._task is None or self._task.done():
            raise ApiError(503, "shutting_down", "the step batcher is not running")
        loop = asyncio.get_running_loop()
        items = [_Item(s, a, int(sd), loop.create_future()) for s, a, sd in zip(sim_ids, actions, seeds, strict=True)]
        for it in items:  # no await in between: a multi-session request lands in one batch
            self._queue.put_nowait(it)
        results = await asyncio.gather(*(it.future for it in items), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    async def _next_batch(self) -> list[_Item]:
        """1. Wait for a first item. 2. Gather more until full or the wait is over."""
        batch: list[_Item] = []
        ids: set[str] = set()

        def take(it: _Item) -> None:
            if it.sim_id in ids:
                self._deferred.append(it)
            else:
                batch.append(it)
                ids.add(it.sim_id)

        deferred, self._deferred = self._deferred, collections.deque()
        for it in deferred:
            if len(batch) < self.max_batch_size:
                take(it)
            else:
                self._deferred.append(it)
        if not batch:
            take(await self._queue.get())
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                take(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                take(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            # One simulator call per task: LocalSimulator steps task groups one after another,
            # so a failed multi-task call may have advanced the groups before the failure,
            # and retrying those sessions would step them twice. Within one task it is all or none.
            groups: dict[str | None, list[_Item]] = {}
            for it in batch:
                groups.setdefault(self.task_of(it.sim_id), []).append(it)
            for items in groups.values():
                await self._run_group(items)

    def _live(self, items: list[_Item]) -> list[_Item]:
        """Requests whose client gave up, or whose session was closed meanwhile, drop out."""
        live = []
        for it in items:
            if it.future.done():
                continue
            if not self.is_alive(it.sim_id):
                it.future.set_exception(ApiError(404, "unknown_session", "the session was closed before its step ran"))
                continue
            live.append(it)
        return live

    async def _run_group(self, items: list[_Item]) -> None:
        live = self._live(items)
        if not live:
            return
        t0 = time.perf_counter()
        try:
            outs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.simulator.step,
                [it.sim_id for it in live], [it.action for it in live], [it.seed for it in live],
            )
            if len(outs) != len(live):
                raise RuntimeError(f"simulator returned {len(outs)} outputs for a batch of {len(live)}")
        except Exception as exc:
            if len(live) > 1:
                # One member's bad input (or a batch too big for memory) must not fail the
                # others: each runs alone, so only the request that causes a failure gets it.
                log.warning("batched step of %d sessions failed (%s); retrying them one by one", len(live),
                            type(exc).__name__)
                for it in live:
                    await self._run_group([it])
                return
            err = from_simulator_error(exc)
            log.warning("step failed: %s", err.message)
            self.metrics.steps_failed += 1
            if not live[0].future.done():
                live[0].future.set_exception(err)
            return
        now = time.perf_counter()
        self.metrics.batches_run += 1
        self.metrics.steps_run += len(live)
        self.metrics.batch_latency_s.append(now - t0)
        for it, out in zip(live, outs):
            self.metrics.step_latency_s.append(now - it.enqueued)
            if not it.future.done():
                it.future.set_result(out)
