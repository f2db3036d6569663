"""Attention masks for packed sequences (training, and the one-pass equivalent of a cache).

A sample is a list of splits, each with a mode (upstream `data/data_utils.py :: prepare_attention_mask_per_sample`):
  causal: lower-triangular inside the split, sees every earlier split;
  full:   bidirectional inside the split, sees every earlier split;
  noise:  like full, but no other split may attend to it (noised latents with a loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MODES = ("causal", "full", "noise")


def split_attention_mask(lens: Sequence[int], modes: Sequence[str], device=None) -> Tensor:
    """(L, L) bool, True where query i may attend to key j, for one sample."""
    if len(lens) != len(modes):
        raise ValueError(f"{len(lens)} split lengths but {len(modes)} modes")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown split modes {bad}; use {MODES}")
    L = int(sum(lens))
    mask = torch.zeros(L, L, dtype=torch.bool, device=device)
    start = 0
    for n, mode in zip(lens, modes):
        end = start + n
        mask[start:end, :start] = True
        block = torch.ones(n, n, dtype=torch.bool, device=device)
        mask[start:end, start:end] = torch.tril(block) if mode == "causal" else block
        start = end
    start = 0
    for n, mode in zip(lens, modes):
        if mode == "noise":  # blank its columns for queries outside it
            end = start + n
            mask[:start, start:end] = False
            mask[end:, start:end] = False
        start += n
    return mask


def batch_masks(samples: Sequence[tuple[Sequence[int], Sequence[str]]], device=None) -> Tensor:
    """(B, 1, Lmax, Lmax) masks for padded samples; padded rows see key 0 (outputs unused)."""
    masks = [split_attention_mask(lens, modes, device) for lens, modes in samples]
    Lm = max(m.shape[0] for m in masks)
    out = torch.zeros(len(masks), 1, Lm, Lm, dtype=torch.bool, device=device)
    for b, m in enumerate(masks):
        n = m.shape[0]
        out[b, 0, :n, :n] = m
        out[b, 0, n:, 0] = True
    return out
