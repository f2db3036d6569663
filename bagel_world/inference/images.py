"""Images in and out of the autoencoder's latent space: input checks, VAE encoding, decoding.

Latent tokens are the packed (N, 64) layout the model reads and generates; the autoencoder
runs in fp32 with autocast off, as the official code keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bagel_world.inference.forward import EngineBase
from bagel_world.inference.transforms import as_pil_rgb, resize_image, to_tensor
from bagel_world.model.autoencoder import latent_to_tokens, to_uint8, tokens_to_latent

# Input images larger than this are refused before any resize (decompression bombs).
MAX_INPUT_PIXELS = 4096 * 4096


class ImageCodec(EngineBase):
    """Input images checked and resized, VAE-encoded to latent tokens, and decoded back."""

    def prepare_image(self, image) -> Image.Image:
        """Validate an input image and resize it with the VAE rule (PIL, bicubic)."""
        pil = as_pil_rgb(image)
        w, h = pil.size
        p = self.config.vit.patch_size
        if w < p or h < p:
            raise ValueError(f"image of {w}x{h} px is smaller than one {p}x{p} patch; give at least {p}x{p} px")
        if w * h > MAX_INPUT_PIXELS:
            raise ValueError(f"image of {w}x{h} px is too large; at most {MAX_INPUT_PIXELS} pixels are accepted")
        return resize_image(pil, *self.config.vae_transform)

    def encode_image(self, pil: Image.Image, generator=None, eps: Tensor | None = None) -> Tensor:
        """VAE-encode a (resized) image into latent tokens (N, 64), posterior sampled."""
        x = to_tensor(pil)[None].to(self.vae_device, torch.float32)
        with torch.autocast(self.vae_device.type, enabled=False):
            z = self.vae.encode(x.contiguous(memory_format=self._conv_format), sample=True, generator=generator,
                                eps=eps)
        p = self.config.latent_patch_size
        return latent_to_tokens(z[0], p)

    @torch.no_grad()
    def encode_images(self, pils: Sequence[Image.Image], generators: Sequence[torch.Generator]) -> Tensor:
        """`encode_image` for B same-size images in one autoencoder call -> (B, N, 64).

        Each posterior draw uses its own generator with the shape of one image, so item b
        gets the draw that `encode_image(pils[b], generators[b])` would make."""
        if len(pils) != len(generators):
            raise ValueError(f"got {len(pils)} images and {len(generators)} generators")
        x = torch.stack([to_tensor(p) for p in pils]).to(self.vae_device, torch.float32)
        s = self.config.vae.downsample  # pixels per latent (not per latent token)
        shape = (1, self.config.latent_channel, x.shape[2] // s, x.shape[3] // s)
        eps = torch.cat([torch.randn(shape, generator=g, device=g.device) for g in generators])
        with torch.autocast(self.vae_device.type, enabled=False):
            z = self.vae.encode(x.contiguous(memory_format=self._conv_format), eps=eps)
        p = self.config.latent_patch_size
        return torch.stack([latent_to_tokens(zb, p) for zb in z])

    @torch.no_grad()
    def decode_tokens(self, tokens: Tensor, image_shape: tuple[int, int]) -> np.ndarray:
        """Latent tokens (N, 64) -> (H, W, 3) uint8 image (truncating cast, as officially)."""
        return to_uint8(self.decode_tokens_float(tokens, image_shape))

    @torch.no_grad()
    def decode_batch(self, tokens: Tensor, image_shape: tuple[int, int]) -> list[np.ndarray]:
        """Latent tokens (B, N, 64) -> B (H, W, 3) uint8 images, in one autoencoder call."""
        if tokens.shape[0] == 1:
            return [self.decode_tokens(tokens[0], image_shape)]
        H, W = image_shape
        s, p, c = self.config.latent_downsample, self.config.latent_patch_size, self.config.latent_channel
        z = torch.cat([tokens_to_latent(t.float().cpu(), H // s, W // s, p, c) for t in tokens])
        with torch.autocast(self.vae_device.type, enabled=False):
            imgs = self.vae.decode(z.to(self.vae_device, torch.float32).contiguous(memory_format=self._conv_format))
        return [to_uint8(im) for im in imgs]

    @torch.no_grad()
    def decode_tokens_float(self, tokens: Tensor, image_shape: tuple[int, int]) -> Tensor:
        H, W = image_shape
        s = self.config.latent_downsample
        z = tokens_to_latent(tokens.float().cpu(), H // s, W // s, self.config.latent_patch_size, self.config.latent_channel)
        with torch.autocast(self.vae_device.type, enabled=False):
            return self.vae.decode(z.to(self.vae_device, torch.float32).contiguous(memory_format=self._conv_format))
