"""The engine's shared state and its one batched forward pass over KV-cache contexts.

`EngineBase` holds the model, autoencoder, tokenizer and config that every part of
`BagelInference` uses, and `_run`: one segment per context as one padded batch (one
network call per layer), optionally appended to the contexts' caches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from bagel_world.config import BagelConfig
from bagel_world.inference.batching import Segment, attention_mask
from bagel_world.inference.context import Context
from bagel_world.model.autoencoder import AutoEncoder
from bagel_world.model.bagel import Bagel
from bagel_world.model.tokens import special_token_ids


class EngineBase:
    """The model, its autoencoder and tokenizer, the basic facts about them, and the batched forward."""

    def __init__(self, model: Bagel, vae: AutoEncoder, tokenizer, config: BagelConfig,
                 checkpoint_dir: Path | None = None):
        self.model, self.vae, self.tokenizer, self.config = model.eval(), vae.eval(), tokenizer, config
        self.checkpoint_dir = checkpoint_dir  # the folder it was loaded from (scenarios, world.json), if any
        # oneDNN's convolutions run ~1.4x faster on channels-last tensors on the CPU.
        self._conv_format = torch.channels_last if self.vae_device.type == "cpu" else torch.contiguous_format
        self.vae.to(memory_format=self._conv_format)
        self.token_ids = special_token_ids(tokenizer)
        if len(tokenizer) > config.llm.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.llm.vocab_size}"
            )

    # ---- basic facts -----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def max_positions(self) -> int:
        return self.config.llm.max_position_embeddings

    @property
    def vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def new_context(self) -> Context:
        cfg = self.config.llm
        empty = torch.zeros(cfg.num_key_value_heads, 0, cfg.head_dim, device=self.device, dtype=self.dtype)
        return Context(kv=[(empty, empty)] * cfg.num_hidden_layers)

    # ---- the batched forward -----------------------------------------------------------
    def _run(self, ctxs: list[Context], segs: list[Segment], *, causal: bool, update: bool, output_layers=False,
             blocks: tuple[int, ...] | None = None):
        """Run one segment per context as one padded batch; optionally append to caches.

        Returns (hidden (B, Qmax, H), lm output). Query rows past a segment's length are
        padding and must be ignored by the caller. `blocks` (causal, every segment of their
        sum): independent causal blocks of each segment (`KeyLayout.blocks`).
        """
        B = len(ctxs)
        q_lens = [s.embeds.shape[0] for s in segs]
        for c, s in zip(ctxs, segs):
            top = c.rope + int(s.pos_offsets.max()) if len(s.pos_offsets) else c.rope
            if top >= self.max_positions:
                raise ValueError(
                    f"context would reach rope position {top}, past the model's limit of "
                    f"{self.max_positions} positions; start a new context or shorten the input"
                )
        Qm = max(q_lens)
        H = self.config.llm.hidden_size
        x = torch.zeros(B, Qm, H, device=self.device, dtype=self.dtype)
        pos = torch.zeros(B, Qm, dtype=torch.long, device=self.device)
        gen = torch.zeros(B, Qm, dtype=torch.bool, device=self.device)
        for b, (c, s) in enumerate(zip(ctxs, segs)):
            x[b, : q_lens[b]] = s.embeds.to(self.dtype)
            pos[b, : q_lens[b]] = c.rope + s.pos_offsets
            if s.gen_mask is not None:
                gen[b, : q_lens[b]] = s.gen_mask
        past, kv_lens = self._pad_past(ctxs)
        mask = attention_mask(kv_lens, q_lens, causal, self.device, blocks)
        out = self.model.language_model(
            x, pos, gen if bool(gen.any()) else None, mask, past, output_layers=output_layers
        )
        if update:
            for b, (c, s) in enumerate(zip(ctxs, segs)):
                n = q_lens[b]
                c.kv = [
                    (torch.cat([k0, k[b, :, :n]], dim=1), torch.cat([v0, v[b, :, :n]], dim=1))
                    for (k0, v0), (k, v) in zip(c.kv, out.new_kv)
                ]
                c.length += n
                c.rope += s.rope_advance
                c.segments.append(s.label)
                c.segment_lengths.append(n)
        return out.hidden, out

    def _pad_past(self, ctxs: list[Context]) -> tuple[list[tuple[Tensor, Tensor]], list[int]]:
        """Stack the caches into (B, kvh, Tmax, d) per layer, zero-padded at the end."""
        lens = [c.length for c in ctxs]
        if len(ctxs) == 1:
            return [(k[None], v[None]) for k, v in ctxs[0].kv], lens
        Tm = max(lens)
        cfg = self.config.llm
        past = []
        for layer in range(cfg.num_hidden_layers):
            k = torch.zeros(len(ctxs), cfg.num_key_value_heads, Tm, cfg.head_dim, device=self.device, dtype=self.dtype)
            v = torch.zeros_like(k)
            for b, c in enumerate(ctxs):
                k[b, :, : lens[b]] = c.kv[layer][0]
                v[b, :, : lens[b]] = c.kv[layer][1]
            past.append((k, v))
        return past, lens
