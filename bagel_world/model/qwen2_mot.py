"""Qwen2 Mixture-of-Transformers language model (BAGEL's LLM with both experts).

Every decoder layer holds two full copies of its weights: the understanding expert (the
plain Qwen2 names) for text, image markers and ViT tokens, and the generation expert
(`*_moe_gen`) for VAE latent tokens. Both experts share one self-attention over the whole
sequence. Parameter names match the official `ema.safetensors` under `language_model.`.

One forward serves every use: cached prefill (text, ViT, clean VAE), a noised latent
block that attends to a cache without being written to it, token-by-token decoding, and
packed training sequences. Callers pass a boolean attention mask (True = may attend) over
[past keys, new keys]; `None` means every query sees every key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bagel_world.config import Qwen2MoTConfig


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: normalise in fp32, cast back to the input dtype, then scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Default Qwen2 RoPE, rotate-half layout. inv_freq is not persistent (not in the checkpoint)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        # positions: (B, Q) -> cos, sin: (B, 1, Q, head_dim); angles in fp32, autocast off.
        with torch.autocast(device_type=positions.device.type, enabled=False):
            freqs = positions.float()[..., None] * self.inv_freq.float().to(positions.device)
            emb = torch.cat([freqs, freqs], dim=-1)
            return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + _rotate_half(x) * sin


@dataclass(frozen=True)
class KeyLayout:
    """Per-row attention layout for cached inference, instead of a dense mask.

    Row b's queries (its first q_lens[b]) see its first kv_lens[b] past keys and its own new
    keys (all of them, or j <= i when causal: bottom-right aligned with the cache). Rows
    are attended separately, so padding costs nothing and unmasked rows use the fused
    SDPA kernels; rows with the same lengths run together.
    """

    kv_lens: tuple[int, ...]
    q_lens: tuple[int, ...]
    causal: bool
    # Causal only: the new keys of every row split into independent blocks of these lengths
    # (summing to each row's q_len); a query sees the cache and the earlier keys of its own
    # block. Several continuations of one context are scored in one row this way.
    blocks: tuple[int, ...] | None = None

    def new_key_mask(self, n: int, T: int, device) -> Tensor | None:
        """(n, T + n) bool mask of n queries over T cached and n new keys, or None (all visible)."""
        if not self.causal or n <= 1:
            return None
        mask = torch.ones(n, T + n, dtype=torch.bool, device=device).tril(diagonal=T)
        if self.blocks is not None:
            if sum(self.blocks) != n:
                raise ValueError(f"blocks {self.blocks} do not sum to the row's {n} new keys")
            block = torch.repeat_interleave(torch.arange(len(self.blocks), device=device),
                                            torch.tensor(self.blocks, device=device))
            mask[:, T:] &= block[:, None] == block[None, :]
        return mask


def _layout_attention(q: Tensor, k: Tensor, v: Tensor, lay: KeyLayout, rep: int) -> Tensor:
    # q: (B, h, Q, d); k, v: (B, kvh, Tm + Q, d) = [padded past, new]. Returns (B, h, Q, d).
    B, _, Q, _ = q.shape
    Tm = k.shape[2] - Q
    out = q.new_zeros(q.shape)
    groups: dict[tuple[int, int], list[int]] = {}
    for b in range(B):
        groups.setdefault((lay.kv_lens[b], lay.q_lens[b]), []).append(b)
    for (T, n), rows in groups.items():
        mask = lay.new_key_mask(n, T, q.device)
        if len(groups) == 1 and T == Tm and n == Q:
            # Every row has the same lengths (a vector env's step): no gathering or padding.
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=rep > 1)
        idx = torch.tensor(rows, device=q.device)
        kb = torch.cat([k[idx, :, :T], k[idx, :, Tm : Tm + n]], dim=2)
        vb = torch.cat([v[idx, :, :T], v[idx, :, Tm : Tm + n]], dim=2)
        out[idx, :, :n] = F.scaled_dot_product_attention(q[idx, :, :n], kb, vb, attn_mask=mask, enable_gqa=rep > 1)
    return out


@dataclass
class ExpertSplit:
    """Which flattened tokens go to which expert. `gen is None` means all und."""

    und: Tensor | None
    gen: Tensor | None

    @classmethod
    def from_mask(cls, gen_mask: Tensor | None) -> ExpertSplit:
        if gen_mask is None:
            return cls(None, None)
        flat = gen_mask.reshape(-1)
        if not bool(flat.any()):
            return cls(None, None)
        return cls(und=(~flat).nonzero().squeeze(1), gen=flat.nonzero().squeeze(1))

    @property
    def has_gen(self) -> bool:
        return self.gen is not None

    def apply(self, x: Tensor, und_fn, gen_fn) -> Tensor:
        """Run und_fn / gen_fn on their tokens of x (N, ...) and put the rows back in order."""
        if self.gen is None:
            return und_fn(x)
        y_gen = gen_fn(x[self.gen])
        y_und = und_fn(x[self.und]) if self.und.numel() else None
        out = y_gen.new_empty((x.shape[0], *y_gen.shape[1:]))
        out[self.gen] = y_gen
        if y_und is not None:
            out[self.und] = y_und.to(out.dtype)
        return out


class Qwen2MLP(nn.Module):
    def __init__(self, cfg: Qwen2MoTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2MoTAttention(nn.Module):
    def __init__(self, cfg: Qwen2MoTConfig):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=True)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=True)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=True)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj_moe_gen = nn.Linear(h, self.num_heads * d, bias=True)
        self.k_proj_moe_gen = nn.Linear(h, self.num_kv_heads * d, bias=True)
        self.v_proj_moe_gen = nn.Linear(h, self.num_kv_heads * d, bias=True)
        self.o_proj_moe_gen = nn.Linear(self.num_heads * d, h, bias=False)
        self.q_norm_moe_gen = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm_moe_gen = RMSNorm(d, cfg.rms_norm_eps)

    def forward(
        self,
        x: Tensor,  # (B, Q, H), already input-normed per expert
        split: ExpertSplit,
        cos_sin: tuple[Tensor, Tensor],
        attn_mask: Tensor | KeyLayout | None,  # (B, 1, Q, T+Q) bool, or a per-row layout
        past: tuple[Tensor, Tensor] | None,  # (B, kvh, T, d) each
    ) -> tuple[Tensor, Tensor, Tensor]:
        B, Q, H = x.shape
        d = self.head_dim
        flat = x.reshape(B * Q, H)
        q = split.apply(flat, self.q_proj, self.q_proj_moe_gen)
        k = split.apply(flat, self.k_proj, self.k_proj_moe_gen)
        v = split.apply(flat, self.v_proj, self.v_proj_moe_gen)
        # The official gen-mode path up-casts q/k to fp32 for the norms and RoPE.
        if split.has_gen:
            q, k = q.float(), k.float()
        q = q.view(B * Q, self.num_heads, d)
        k = k.view(B * Q, self.num_kv_heads, d)
        # Per-head norms (weight (d,) shared across heads), each token by its expert.
        q = split.apply(q, self.q_norm, self.q_norm_moe_gen)
        k = split.apply(k, self.k_norm, self.k_norm_moe_gen)
        q = q.view(B, Q, self.num_heads, d).transpose(1, 2)
        k = k.view(B, Q, self.num_kv_heads, d).transpose(1, 2)
        v = v.view(B, Q, self.num_kv_heads, d).transpose(1, 2).to(x.dtype)
        cos, sin = cos_sin
        q, k = apply_rope(q, cos, sin).to(x.dtype), apply_rope(k, cos, sin).to(x.dtype)
        new_k, new_v = k, v
        if past is not None:
            k = torch.cat([past[0].to(k.dtype), k], dim=2)
            v = torch.cat([past[1].to(v.dtype), v], dim=2)
        rep = self.num_heads // self.num_kv_heads  # GQA: query head h uses kv head h // rep
        if isinstance(attn_mask, KeyLayout):
            a = _layout_attention(q, k, v, attn_mask, rep)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=rep > 1)
        a = a.transpose(1, 2).reshape(B * Q, self.num_heads * d)
        o = split.apply(a, self.o_proj, self.o_proj_moe_gen)
        return o.view(B, Q, H), new_k, new_v


class Qwen2MoTDecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2MoTConfig):
        super().__init__()
        self.self_attn = Qwen2MoTAttention(cfg)
        self.mlp = Qwen2MLP(cfg)
        self.mlp_moe_gen = Qwen2MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, split, cos_sin, attn_mask, past):
        B, Q, H = x.shape
        dtype = x.dtype
        h = split.apply(x.reshape(B * Q, H), self.input_layernorm, self.input_layernorm_moe_gen).to(dtype)
        o, new_k, new_v = self.self_attn(h.view(B, Q, H), split, cos_sin, attn_mask, past)
        x = x + o.to(dtype)
        flat = x.reshape(B * Q, H)
        # Post-attention norm outputs are cast to the stream dtype before the MLPs (official).
        m = split.apply(
            flat,
            lambda t: self.mlp(self.post_attention_layernorm(t).to(dtype)),
            lambda t: self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(t).to(dtype)),
        )
        return x + m.view(B, Q, H).to(dtype), new_k, new_v


class Qwen2MoTModel(nn.Module):
    def __init__(self, cfg: Qwen2MoTConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2MoTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)


@dataclass
class LMOutput:
    hidden: Tensor  # (B, Q, H) after the final norm of each token's expert
    new_kv: list[tuple[Tensor, Tensor]]  # per layer (B, kvh, Q, d) keys (normed, rotated) and values
    layer_outputs: list[Tensor] | None = None  # residual stream after each layer, if asked


class Qwen2MoTForCausalLM(nn.Module):
    """`language_model` in the BAGEL state dict: `.model.*` and `.lm_head`."""

    def __init__(self, cfg: Qwen2MoTConfig):
        super().__init__()
        self.config = cfg
        self.model = Qwen2MoTModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        # Training memory: with grad enabled, each decoder layer's activations are recomputed
        # in the backward instead of kept (same values; `bagel-world train --activation-checkpointing`).
        self.checkpoint_layers = False

    def forward(
        self,
        x: Tensor,  # (B, Q, H) input embeddings
        positions: Tensor,  # (B, Q) rope positions
        gen_mask: Tensor | None = None,  # (B, Q) True for tokens of the gen expert
        attn_mask: Tensor | KeyLayout | None = None,  # (B, 1, Q, T+Q) bool (True = may attend) or KeyLayout
        past_kv: list[tuple[Tensor, Tensor]] | None = None,  # per layer (B, kvh, T, d)
        output_layers: bool = False,
    ) -> LMOutput:
        B, Q, H = x.shape
        split = ExpertSplit.from_mask(gen_mask)
        cos_sin = self.model.rotary_emb(positions, x.dtype)
        new_kv, layer_outputs = [], [] if output_layers else None
        recompute = self.checkpoint_layers and torch.is_grad_enabled()
        for i, layer in enumerate(self.model.layers):
            args = (x, split, cos_sin, attn_mask, None if past_kv is None else past_kv[i])
            x, k, v = checkpoint(layer, *args, use_reentrant=False) if recompute else layer(*args)
            new_kv.append((k, v))
            if layer_outputs is not None:
                layer_outputs.append(x)
        h = split.apply(x.reshape(B * Q, H), self.model.norm, self.model.norm_moe_gen).to(x.dtype)
        return LMOutput(hidden=h.view(B, Q, H), new_kv=new_kv, layer_outputs=layer_outputs)
