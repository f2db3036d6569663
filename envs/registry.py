"""Shared simulators: every env of a process that names the same (checkpoint, backend,
device) steps one simulator, so N envs load one model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from bagel_world.simulator.base import Simulator

log = logging.getLogger(__name__)

_SIMULATORS: dict[tuple, Simulator] = {}  # (checkpoint, backend, device) -> its simulator
_SIMULATORS_LOCK = threading.Lock()


def shared_simulator(checkpoint=None, backend: str | None = None, device=None) -> Simulator:
    """One simulator per (checkpoint, backend, device) in this process, made on first use."""
    ckpt = None if checkpoint is None else str(checkpoint)
    if ckpt is not None and Path(ckpt).expanduser().exists():
        ckpt = str(Path(ckpt).expanduser().resolve())  # same folder, same key
    key = (ckpt, None if backend is None else str(backend), None if device is None else str(device))
    with _SIMULATORS_LOCK:
        sim = _SIMULATORS.get(key)
        if sim is None:
            from bagel_world.simulator import make_simulator  # heavy: only when an env needs it

            log.info("creating simulator for checkpoint=%s backend=%s device=%s", *key)
            sim = make_simulator(checkpoint, backend=backend, device=device)
            _SIMULATORS[key] = sim
    return sim


def clear_simulator_cache() -> None:
    """Forget the shared simulators (their memory is freed once no env holds them)."""
    with _SIMULATORS_LOCK:
        _SIMULATORS.clear()

