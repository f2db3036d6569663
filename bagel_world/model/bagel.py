"""The BAGEL composite: LLM + SigLIP + the heads that connect them to images.

State-dict layout equals the official `ema.safetensors` (no autoencoder inside; that is
`ae.safetensors`, see `autoencoder.py`). This module only embeds inputs and projects
outputs; sequencing, caching and sampling live in `bagel_world.inference`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_world.config import BagelConfig
from bagel_world.model.qwen2_mot import Qwen2MoTForCausalLM
from bagel_world.model.siglip_navit import SiglipVisionModel


def sincos_2d_table(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos table (grid*grid, dim); column coordinate in the first half (DiT)."""
    if dim % 4:
        raise ValueError(f"sin-cos table dim must be a multiple of 4, got {dim}")
    coords = np.arange(grid, dtype=np.float64)
    col, row = np.meshgrid(coords, coords)  # col varies fastest along a row

    def one_axis(pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_axis(col), one_axis(row)], axis=1).astype(np.float32)


class PositionEmbedding(nn.Module):
    """A stored, frozen sin-cos table indexed by flattened 2-D position ids."""

    def __init__(self, grid: int, dim: int):
        super().__init__()
        self.grid = grid
        self.pos_embed = nn.Parameter(torch.from_numpy(sincos_2d_table(dim, grid)), requires_grad=False)

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.pos_embed[position_ids]


class TimestepEmbedder(nn.Module):
    """t in [0, 1] (no x1000 scaling) -> [cos, sin] features (256) -> MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def features(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        w = self.mlp[0].weight
        return self.mlp(self.features(t).to(w.dtype))


class MLPConnector(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Bagel(nn.Module):
    def __init__(self, config: BagelConfig):
        super().__init__()
        self.config = config
        H = config.llm.hidden_size
        self.language_model = Qwen2MoTForCausalLM(config.llm)
        self.vit_model = SiglipVisionModel(config.vit)
        self.connector = MLPConnector(config.vit.hidden_size, H)
        self.vit_pos_embed = PositionEmbedding(config.vit_max_num_patch_per_side, H)
        self.latent_pos_embed = PositionEmbedding(config.max_latent_size, H)
        self.time_embedder = TimestepEmbedder(H)
        self.vae2llm = nn.Linear(config.patch_latent_dim, H)
        self.llm2vae = nn.Linear(H, config.patch_latent_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae2llm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vae2llm.weight.device

    # ---- input embeddings (one packed image or text run at a time) ----------------------
    def embed_text(self, ids: Tensor) -> Tensor:
        return self.language_model.model.embed_tokens(ids)

    def vit_features(self, patches: Tensor, position_ids: Tensor, cu_seqlens: Tensor) -> Tensor:
        """SigLIP output for packed images: (N, 3*p*p) patches -> (N, vit_hidden)."""
        w = self.vit_model.vision_model.embeddings.patch_embedding.weight
        return self.vit_model(patches.to(w.dtype), position_ids, cu_seqlens)

    def embed_vit(self, patches: Tensor, position_ids: Tensor, cu_seqlens: Tensor) -> Tensor:
        """ViT tokens in LLM space: connector(SigLIP(x)) + vit_pos_embed[pos]. (N, H)."""
        feats = self.vit_features(patches, position_ids, cu_seqlens)
        return self.connector(feats.to(self.connector.fc1.weight.dtype)) + self.vit_pos_embed(position_ids)

    def embed_latents(self, tokens: Tensor, t: Tensor, position_ids: Tensor) -> Tensor:
        """Latent tokens in LLM space: vae2llm(x) + time_embedder(t) + latent_pos_embed[pos].

        tokens: (..., N, 64); t: broadcastable timestep(s), shape (...,) one per block;
        position_ids: (N,).
        """
        lead = tokens.shape[:-2]
        t = t.reshape(-1).to(self.device)
        temb = self.time_embedder(t).view(*lead, 1, -1) if lead else self.time_embedder(t)
        x = self.vae2llm(tokens.to(self.dtype))
        return x + temb + self.latent_pos_embed(position_ids)
