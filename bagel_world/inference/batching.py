"""What the engine's parts pass around: one segment of tokens per context, and the checks
that turn a call's arguments into one item per context (no model inside)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bagel_world.inference.context import Context
from bagel_world.model.qwen2_mot import KeyLayout

Contexts = Context | Sequence[Context]


@dataclass
class Segment:
    """One run of tokens to append to (or query against) one context."""

    embeds: Tensor  # (Q, H)
    pos_offsets: Tensor  # (Q,) added to the context's rope: arange for text, zeros for images
    gen_mask: Tensor | None  # (Q,) True where the gen expert applies
    rope_advance: int  # how far the context's rope moves after this segment
    label: str


def attention_mask(kv_lens: Sequence[int], q_lens: Sequence[int], causal: bool, device,
                   blocks: Sequence[int] | None = None) -> KeyLayout | None:
    """Each row's queries see its own cache and its own new keys (causal: j <= i; with
    `blocks`, only the earlier keys of their own block, `KeyLayout.blocks`)."""
    if len(kv_lens) == 1 and not causal:
        return None  # one row, no padding, full attention: the fused kernel as is
    if blocks is not None and (not causal or any(int(q) != sum(blocks) for q in q_lens)):
        raise ValueError(f"blocks {tuple(blocks)} need causal rows of {sum(blocks)} new keys each, got {tuple(q_lens)}")
    return KeyLayout(tuple(int(t) for t in kv_lens), tuple(int(q) for q in q_lens), causal,
                     None if blocks is None else tuple(int(b) for b in blocks))


def ctx_list(ctxs: Contexts) -> list[Context]:
    if isinstance(ctxs, Context):
        return [ctxs]
    ctxs = list(ctxs)
    if not ctxs or not all(isinstance(c, Context) for c in ctxs):
        raise TypeError("expected a Context or a non-empty sequence of Contexts")
    return ctxs


def as_batch(ctxs: Contexts, items, single_types) -> tuple[list[Context], list]:
    single = isinstance(ctxs, Context)
    ctxs = ctx_list(ctxs)
    if single and (isinstance(items, single_types) or (isinstance(items, (list, tuple)) and items and isinstance(items[0], int))):
        items = [items]
    items = list(items)
    if len(items) != len(ctxs):
        raise ValueError(f"got {len(items)} inputs for {len(ctxs)} contexts; give one per context")
    return ctxs, items


def per_item(value, n: int, name: str) -> list:
    """One value per item: None or a generator is shared; a tensor serves one item only."""
    if value is None or isinstance(value, torch.Generator):
        return [value] * n
    if isinstance(value, Tensor):
        if n != 1:
            raise ValueError(f"{name}: one tensor was given for {n} items; give a list of {n}")
        return [value]
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name}: got {len(value)} values for {n} items")
    return value


def need(ctxs: Contexts | None, n: int, what: str) -> list[Context]:
    if ctxs is None:
        raise ValueError(f"{what} must be given")
    lst = ctx_list(ctxs)
    if len(lst) != n:
        raise ValueError(f"{what}: got {len(lst)} contexts for {n} requests")
    return lst
