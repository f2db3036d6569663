"""Flow-matching sampler pieces as pure functions (no network inside).

The network predicts v = eps - x0 (it points from data to noise); sampling integrates
from t = 1 down to 0 with Euler steps x <- x - v * dt on a shifted time grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-8


def timestep_grid(num_timesteps: int, shift: float) -> tuple[Tensor, Tensor]:
    """(t_i, dt_i) for the n-1 network evaluations, fp32 on the CPU.

    u = linspace(1, 0, n); t = s*u / (1 + (s-1)*u); dt_i = t_i - t_{i+1}.
    """
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
    t = shift_timesteps(torch.linspace(1, 0, num_timesteps), shift)
    return t[:-1], t[:-1] - t[1:]


def shift_timesteps(u: Tensor, shift: float) -> Tensor:
    """The official timestep shift t = s*u / (1 + (s-1)*u): s > 1 spends more time at high noise
    (sampling grid), and moves training timesteps the same way."""
    return shift * u / (1 + (shift - 1) * u)


def guidance_active(t: float, interval: tuple[float, float]) -> bool:
    """CFG is applied when lo < t <= hi on the shifted t."""
    return interval[0] < t <= interval[1]


def _norm(x: Tensor, per_token: bool) -> Tensor:
    # x: (B, N, C). global: Frobenius norm per item -> (B, 1, 1); per token -> (B, N, 1).
    x = x.float()
    if per_token:
        return torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)


def combine_guidance(
    v_cond: Tensor,
    v_text_uncond: Tensor | None,
    v_img_uncond: Tensor | None,
    cfg_text_scale: float,
    cfg_img_scale: float,
    renorm_type: str = "global",
    renorm_min: float = 0.0,
) -> Tensor:
    """Official classifier-free guidance with renormalisation (batched over dim 0).

    All velocities are (B, N, C). Image guidance is only applied on top of text guidance:
    with cfg_text_scale <= 1 the conditional velocity is returned unchanged.
    """
    if cfg_text_scale <= 1.0:
        return v_cond
    if v_text_uncond is None:
        raise ValueError("cfg_text_scale > 1 needs the text-free velocity")
    use_img = cfg_img_scale > 1.0
    if use_img and v_img_uncond is None:
        raise ValueError("cfg_img_scale > 1 needs the image-free velocity")
    u = v_text_uncond + cfg_text_scale * (v_cond - v_text_uncond)
    if renorm_type == "text_channel":
        scale = (_norm(v_cond, True) / (_norm(u, True) + _EPS)).clamp(min=renorm_min, max=1.0)
        u = u * scale.to(u.dtype)
        return v_img_uncond + cfg_img_scale * (u - v_img_uncond) if use_img else u
    if renorm_type not in ("global", "channel"):
        raise NotImplementedError(f"cfg_renorm_type {renorm_type!r}; use 'global', 'channel' or 'text_channel'")
    w = v_img_uncond + cfg_img_scale * (u - v_img_uncond) if use_img else u
    per_token = renorm_type == "channel"
    scale = (_norm(v_cond, per_token) / (_norm(w, per_token) + _EPS)).clamp(min=renorm_min, max=1.0)
    return w * scale.to(w.dtype)


def euler_step(x: Tensor, v: Tensor, dt: Tensor) -> Tensor:
    """x <- x - v*dt. dt is a 0-dim fp32 tensor, so v*dt keeps v's dtype (as officially)."""
    return x - v * dt.to(v.device)
