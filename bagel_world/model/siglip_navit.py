"""SigLIP NaViT vision encoder (BAGEL's understanding path, upstream
`siglip_navit.py :: SiglipVisionTransformer.forward`, `bagel.py :: forward_cache_update_vit`).

Images of different sizes are packed into one sequence of patches; each image attends
only to itself. Parameter names match `ema.safetensors` under the `vit_model.` prefix:

    vision_model.embeddings.patch_embedding   Linear(3*p*p -> hidden), input order (dy, dx, c)
    vision_model.embeddings.position_embedding Embedding(M*M, hidden), id = row*M + col
    vision_model.encoder.layers.{j}.{self_attn.{q,k,v,out}_proj, layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}
    vision_model.post_layernorm

`SiglipConfig.num_hidden_layers` is already the number of layers built (26 for the 7B:
the file's 27 minus the dropped last layer); there is no RoPE and no pooling head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_world.config import SiglipConfig


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Linear(cfg.num_channels * cfg.patch_size**2, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def forward(self, packed_pixel_values: Tensor, packed_flattened_position_ids: Tensor) -> Tensor:
        x = packed_pixel_values.to(self.patch_embedding.weight.dtype)
        return self.patch_embedding(x) + self.position_embedding(packed_flattened_position_ids)


def _packed_attention(q: Tensor, k: Tensor, v: Tensor, seqlens: list[int]) -> Tensor:
    """q, k, v: (N, heads, head_dim), N = sum(seqlens); attention only inside each segment.

    Equal-length segments (the usual batch of same-size frames) run as one batched call;
    otherwise segments run one by one, which avoids an N x N block-diagonal mask.
    """
    n, heads, d = q.shape
    if len(seqlens) == 1 or len(set(seqlens)) == 1:
        b, length = len(seqlens), seqlens[0]
        q, k, v = (t.reshape(b, length, heads, d).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return out.transpose(1, 2).reshape(n, heads, d)
    outs = []
    for qs, ks, vs in zip(q.split(seqlens), k.split(seqlens), v.split(seqlens)):
        out = F.scaled_dot_product_attention(qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1))
        outs.append(out.transpose(0, 1))
    return torch.cat(outs, dim=0)


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, h)
        self.k_proj = nn.Linear(h, h)
        self.v_proj = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, h)

    def forward(self, x: Tensor, seqlens: list[int]) -> Tensor:
        n = x.shape[0]
        q, k, v = (p(x).view(n, self.num_heads, self.head_dim) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(_packed_attention(q, k, v, seqlens).reshape(n, -1))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    """Pre-norm block: h += attn(LN1(h)); h += mlp(LN2(h))."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, seqlens: list[int]) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), seqlens)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: Tensor, seqlens: list[int]) -> Tensor:
        for layer in self.layers:
            x = layer(x, seqlens)
        return x


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, packed_pixel_values: Tensor, packed_flattened_position_ids: Tensor, seqlens: list[int]) -> Tensor:
        x = self.embeddings(packed_pixel_values, packed_flattened_position_ids)
        return self.post_layernorm(self.encoder(x, seqlens))


class SiglipVisionModel(nn.Module):
    """Packed images -> per-patch features (N, hidden), post_layernorm applied."""

    def __init__(self, cfg: SiglipConfig | None = None):
        super().__init__()
        self.config = cfg = cfg if cfg is not None else SiglipConfig()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(
        self,
        packed_pixel_values: Tensor,
        packed_flattened_position_ids: Tensor,
        cu_seqlens: Tensor,
    ) -> Tensor:
        """packed_pixel_values (N, 3*p*p) in (dy, dx, c) order; position ids (N,) = row*M + col;
        cu_seqlens (B+1,) image boundaries, starting at 0 and ending at N. Returns (N, hidden)."""
        seqlens = self._check_inputs(packed_pixel_values, packed_flattened_position_ids, cu_seqlens)
        return self.vision_model(packed_pixel_values, packed_flattened_position_ids, seqlens)

    def _check_inputs(self, pixels: Tensor, pos_ids: Tensor, cu_seqlens: Tensor) -> list[int]:
        cfg = self.config
        dim = cfg.num_channels * cfg.patch_size**2
        if pixels.ndim != 2 or pixels.shape[1] != dim:
            raise ValueError(f"packed_pixel_values must have shape (N, {dim}), got {tuple(pixels.shape)}")
        n = pixels.shape[0]
        if pos_ids.shape != (n,):
            raise ValueError(f"packed_flattened_position_ids must have shape ({n},), got {tuple(pos_ids.shape)}")
        bounds = [int(b) for b in cu_seqlens.tolist()]
        if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != n:
            raise ValueError(f"cu_seqlens must start at 0 and end at N={n}, got {bounds}")
        seqlens = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        if min(seqlens) <= 0:
            raise ValueError(f"cu_seqlens must be strictly increasing (no empty image), got {bounds}")
        if n and pos_ids.device.type != "meta":
            lo, hi = int(pos_ids.min()), int(pos_ids.max())
            if lo < 0 or hi >= cfg.num_positions:
                raise ValueError(
                    f"position ids span [{lo}, {hi}] but the table has {cfg.num_positions} rows "
                    f"({cfg.num_patches_per_side} patches per side)"
                )
        return seqlens


__all__ = ["SiglipVisionModel"]
