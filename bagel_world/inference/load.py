"""`load_bagel`: a checkpoint folder or Hugging Face repo id -> a ready `BagelInference`."""

from __future__ import annotations

import os

import torch

from bagel_world.inference.engine import BagelInference
from bagel_world.model.loader import load_checkpoint


def load_bagel(
    path_or_repo_id: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> BagelInference:
    """Load a checkpoint (`bagel_world.model.loader.load_checkpoint`: every file checked, the
    weights loaded with `strict=True`) and return a ready `BagelInference`.

    device: default CUDA when available, else CPU. dtype: default bf16 on CUDA, fp32 on CPU.
    The autoencoder always stays fp32 (as the official code keeps it).
    """
    ck = load_checkpoint(path_or_repo_id, device=device, dtype=dtype)
    return BagelInference(ck.model, ck.vae, ck.tokenizer, ck.config, checkpoint_dir=ck.folder)
