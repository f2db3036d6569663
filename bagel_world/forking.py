"""State that does not survive `fork()`, and a clear error instead of a hung child.

Torch's CPU thread pools and CUDA, and EGL/OpenGL contexts (MuJoCo's renderer, MiniWorld's
pyglet), are left broken in a child made by `fork()`: its first convolution or GL call
waits forever. `fork` is multiprocessing's default start method on Linux, so
``gym.make_vec(env_id, n, vectorization_mode="async")`` forks the process that has just
built one env to read its spaces. The code that creates such state marks it here; an env
made in a forked child calls `check_not_forked` and raises, naming what to pass instead.
Importing this module imports nothing else.
"""

from __future__ import annotations

import os

# kind ("torch", "gl") -> {what: pid of the process that created it}
_HELD: dict[str, dict[str, int]] = {}

ASYNC_HINT = ("create the vector env with vector_kwargs={'context': 'spawn'} (e.g. "
              "gym.make_vec(env_id, n, vectorization_mode='async', vector_kwargs={'context': 'spawn'})), "
              "or use vectorization_mode='sync'")


def mark_unforkable(kind: str, what: str) -> None:
    """Record that this process now holds `what`, state of `kind` that a forked child cannot use."""
    _HELD.setdefault(kind, {}).setdefault(what, os.getpid())


def inherited(kind: str) -> list[str]:
    """What of `kind` this process inherited through `fork()` from a parent that created it."""
    pid = os.getpid()
    return sorted(what for what, owner in _HELD.get(kind, {}).items() if owner != pid)


def check_not_forked(kind: str, owner: str, hint: str = ASYNC_HINT) -> None:
    """A RuntimeError if this process was forked from one holding state of `kind`."""
    held = inherited(kind)
    if held:
        raise RuntimeError(
            f"{owner} cannot run in a process forked from one that holds {' and '.join(held)}: "
            f"it would hang on its first model or rendering call. {hint[0].upper()}{hint[1:]}."
        )
