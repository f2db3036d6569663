"""The FLUX autoencoder (`ae.safetensors`) that BAGEL uses for its generation latents.

Module and parameter names follow the published file exactly (244 tensors for the FLUX
sizes), so `load_state_dict(strict=True)` works:

    encoder.conv_in, encoder.down.{L}.block.{i}.{norm1,conv1,norm2,conv2[,nin_shortcut]},
    encoder.down.{L}.downsample.conv (all levels but the last), encoder.mid.{block_1,
    attn_1,block_2}, encoder.norm_out, encoder.conv_out;
    decoder.conv_in, decoder.mid.*, decoder.up.{L}.block.{0..num_res_blocks},
    decoder.up.{L}.upsample.conv (levels >= 1), decoder.norm_out, decoder.conv_out.

`decoder.up` is indexed by level (0 = highest resolution) although it runs from the
deepest level up. The per-level `attn` lists are empty (no keys) and kept only so the
module tree has the upstream shape.

Latent convention (upstream `modeling/autoencoder.py :: AutoEncoder.encode/decode`): `encode` returns the *scaled* latent
scale * (z - shift); `decode` takes that scaled latent. The helpers at the bottom turn a
(16, 2h, 2w) latent into h*w tokens of 2*2*16 values and back (4.10 step 2, 6.7), and an
image in [-1, 1] into uint8 pixels the way the official `decode_image` does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_world.config import AutoEncoderConfig


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: Tensor) -> Tensor:
    return F.silu(x)  # x * sigmoid(x), in one fused kernel


class ResnetBlock(nn.Module):
    """GN -> swish -> conv3 -> GN -> swish -> conv3, plus a 1x1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, C, H, W) -> (B, 1 head, H*W, C); SDPA's default scale is 1/sqrt(C).
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q(y), self.k(y), self.v(y)))
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one pixel, then a 3x3 stride-2 conv with no padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: `block` list, empty `attn` list, optional down/upsample."""

    def __init__(self, blocks: list[ResnetBlock]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()  # empty in FLUX; kept for the upstream module tree


class Encoder(nn.Module):
    """(B, 3, H, W) image -> (B, 2*z_channels, ceil(H/8), ceil(W/8)) moments (mean, logvar)."""

    def __init__(self, cfg: AutoEncoderConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        widths_in = [ch] + [ch * m for m in mult[:-1]]
        self.down = nn.ModuleList()
        for level, m in enumerate(mult):
            c_in, c_out = widths_in[level], ch * m
            blocks = [ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(cfg.num_res_blocks)]
            stage = _Level(blocks)
            if level != len(mult) - 1:
                stage.downsample = Downsample(c_out)
            self.down.append(stage)
        c_mid = ch * mult[-1]
        self.mid = _Mid(c_mid)
        self.norm_out = _group_norm(c_mid)
        self.conv_out = nn.Conv2d(c_mid, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) unscaled latent -> (B, 3, 8h, 8w) image in about [-1, 1]."""

    def __init__(self, cfg: AutoEncoderConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        c_mid = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c_mid, 3, padding=1)
        self.mid = _Mid(c_mid)
        # Built from the deepest level up, stored by level index (0 = full resolution).
        stages: list[_Level] = []
        c_in = c_mid
        for level in reversed(range(len(mult))):
            c_out = ch * mult[level]
            blocks = [ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(cfg.num_res_blocks + 1)]
            stage = _Level(blocks)
            if level != 0:
                stage.upsample = Upsample(c_out)
            stages.insert(0, stage)
            c_in = c_out
        self.up = nn.ModuleList(stages)
        self.norm_out = _group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class AutoEncoder(nn.Module):
    """FLUX VAE with BAGEL's latent scaling: latent' = scale * (z - shift)."""

    def __init__(self, cfg: AutoEncoderConfig | None = None):
        super().__init__()
        self.config = cfg = cfg if cfg is not None else AutoEncoderConfig()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.scale_factor = cfg.scale_factor
        self.shift_factor = cfg.shift_factor

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.weight.dtype

    def _check_image(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.config.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected an image batch of shape (B, {self.config.in_channels}, H, W) in [-1, 1], got {shape}"
            )

    def encode_moments(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 2*z_channels, H/8, W/8): mean then log-variance."""
        self._check_image(x)
        return self.encoder(x.to(self.dtype))

    def encode(
        self,
        x: Tensor,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        """(B, 3, H, W) image -> scaled latent (B, z_channels, H/8, W/8).

        The official encoder *samples* the posterior, z = mean + exp(0.5*logvar) * eps with
        eps ~ N(0, I); pass `eps` to replay a stored draw, or `generator` to seed it (the
        draw happens on the generator's device). `sample=False` uses the mean.
        """
        mean, logvar = torch.chunk(self.encode_moments(x), 2, dim=1)
        if sample:
            if eps is None:
                device = generator.device if generator is not None else mean.device
                eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
            elif eps.shape != mean.shape:
                raise ValueError(f"eps has shape {tuple(eps.shape)}, the posterior has {tuple(mean.shape)}")
            z = mean + torch.exp(0.5 * logvar) * eps.to(device=mean.device, dtype=mean.dtype)
        else:
            z = mean
        return self.scale_factor * (z - self.shift_factor)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent (B, z_channels, h, w) -> image (B, 3, 8h, 8w), float, about [-1, 1]."""
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != self.config.z_channels:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"expected a latent of shape (B, {self.config.z_channels}, h, w), got {shape}")
        return self.decoder(z.to(self.dtype) / self.scale_factor + self.shift_factor)


# ---- latent <-> tokens, image -> uint8 ------------------------------------------------------


def latent_to_tokens(z: Tensor, p: int = 2) -> Tensor:
    """One latent (C, H, W) or (1, C, H, W) -> (H//p * W//p, p*p*C) tokens.

    Odd rows/columns are cropped (as the official code does). Tokens are row-major over
    the (H//p, W//p) grid; inside a token the index is (py*p + px)*C + c.
    """
    if z.ndim == 4:
        if z.shape[0] != 1:
            raise ValueError(f"latent_to_tokens takes one latent, got a batch of {z.shape[0]}")
        z = z[0]
    if z.ndim != 3:
        raise ValueError(f"expected a latent of shape (C, H, W) or (1, C, H, W), got {tuple(z.shape)}")
    c, hh, ww = z.shape
    h, w = hh // p, ww // p
    if h == 0 or w == 0:
        raise ValueError(f"latent {tuple(z.shape)} is smaller than one {p}x{p} patch")
    z = z[:, : h * p, : w * p].reshape(c, h, p, w, p)
    return z.permute(1, 3, 2, 4, 0).reshape(h * w, p * p * c)


def tokens_to_latent(tokens: Tensor, h: int, w: int, p: int = 2, c: int = 16) -> Tensor:
    """(h*w, p*p*c) tokens -> (1, c, h*p, w*p) latent; the exact inverse of `latent_to_tokens`."""
    if tokens.ndim != 2 or tokens.shape != (h * w, p * p * c):
        raise ValueError(
            f"expected tokens of shape ({h * w}, {p * p * c}) for a {h}x{w} grid of {p}x{p}x{c} patches, "
            f"got {tuple(tokens.shape)}"
        )
    x = tokens.reshape(1, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(1, c, h * p, w * p)


def to_uint8(img: Tensor) -> np.ndarray:
    """Image (3, H, W) or (1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8 numpy array.

    Same as the official `decode_image`: clamp(0.5*x + 0.5, 0, 1) * 255, then a truncating
    cast (not rounding), so results can be one level below a rounded conversion.
    """
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {img.shape[0]}")
        img = img[0]
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W) or (1, 3, H, W), got {tuple(img.shape)}")
    x = (img.float() * 0.5 + 0.5).clamp(0, 1) * 255
    return x.permute(1, 2, 0).to(torch.uint8).cpu().numpy()


__all__ = ["AutoEncoder", "Encoder", "Decoder", "latent_to_tokens", "tokens_to_latent", "to_uint8"]
