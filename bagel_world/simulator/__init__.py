"""World simulators: the batched, forkable API that envs, agents and the server use."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bagel_world.simulator.base import SamplingSettings, Simulator, StepOutput, TaskTemplate

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "SamplingSettings",
    "Simulator",
    "StepOutput",
    "TaskTemplate",
    "default_checkpoint",
    "make_simulator",
    "SHIPPED_CHECKPOINT",
]

# The small world model trained by `bagel-world train` and shipped inside the package.
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "bagel-world-small"


def _cache_dir() -> Path:
    return Path(os.environ.get("BAGEL_WORLD_CACHE", Path.home() / ".cache" / "bagel_world"))


def default_checkpoint() -> Path:
    """The model used when none is named.

    The shipped small world model when it is present in the package; otherwise a tiny
    random-weight checkpoint (written once into the cache; it produces noise-like frames
    and exists so that every code path runs without downloads).
    """
    if (SHIPPED_CHECKPOINT / "ema.safetensors").is_file():
        return SHIPPED_CHECKPOINT
    from bagel_world.model.checkpoint_io import write_random_checkpoint

    path = _cache_dir() / "tiny-random-v1"
    if not (path / "ae.safetensors").is_file():
        log.warning("no trained checkpoint ships with this install; writing a tiny RANDOM model to %s", path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        write_random_checkpoint(tmp, "tiny", seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; theirs is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path


def make_simulator(
    checkpoint: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Simulator:
    """A simulator on a local checkpoint (default: `default_checkpoint()`) or a server URL."""
    if backend is not None:
        if not str(backend).startswith(("http://", "https://")):
            raise ValueError(f"backend must be an http(s):// URL of a bagel-world server, got {backend!r}")
        from bagel_world.simulator.remote import RemoteSimulator

        return RemoteSimulator(str(backend))
    from bagel_world.inference.load import load_bagel
    from bagel_world.simulator.local import LocalSimulator

    engine = load_bagel(checkpoint if checkpoint is not None else default_checkpoint(), device=device, dtype=dtype)
    return LocalSimulator(engine)
