"""Shared fixtures: the official conformance kit and tiny random checkpoints."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Headless rendering, as `.ci/run` sets it and as the sims default to: without it a test that
# imports MuJoCo before any sim adapter leaves it on GLFW, and later MuJoCo renders fail.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _conformance_dir() -> Path | None:
    env = os.environ.get("BAGEL_CONFORMANCE_DIR")
    if env and not (Path(env) / "model" / "ema.safetensors").is_file():
        # Named but unusable: say so rather than silently skipping the conformance tests.
        what = "is not a folder" if not Path(env).is_dir() else "has no model/ema.safetensors"
        warnings.warn(f"BAGEL_CONFORMANCE_DIR={env!r} {what}; looking in ../shared/conformance instead",
                      stacklevel=2)
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "conformance", REPO / "shared" / "conformance"]:
        if (cand / "model" / "ema.safetensors").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The official-output kit (../shared/conformance); tests using it skip when it is absent."""
    d = _conformance_dir()
    if d is None:
        pytest.skip("conformance kit not found (set BAGEL_CONFORMANCE_DIR or place it at ../shared/conformance)")
    return d


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A tiny random checkpoint in the official layout (+ bagel/ae configs, byte tokenizer)."""
    from bagel_world.model.checkpoint_io import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_ckpt):
    from bagel_world.inference.load import load_bagel

    return load_bagel(tiny_ckpt, device="cpu", dtype=torch.float32)
