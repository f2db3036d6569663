"""Building contexts: text, images and latents appended to KV caches, as segments.

A segment is one run of embedded tokens: `<|im_start|> text <|im_end|>` (causal, und
expert), or an image between its start/end markers as clean VAE latents (gen expert) or
ViT tokens (und expert). Each append runs one segment per context as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bagel_world.inference.batching import Contexts, Segment, as_batch, ctx_list, per_item
from bagel_world.inference.features import VitFeatures
from bagel_world.inference.transforms import as_pil_rgb, flattened_position_ids


class ContextBuilding(VitFeatures):
    """Tokenizing and appending to contexts, and the segments appends are made of."""

    def tokenize(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    # ---- appending -------------------------------------------------------------------
    @torch.no_grad()
    def append_text(self, ctxs: Contexts, texts: str | Sequence[int] | Sequence[str | Sequence[int]]) -> None:
        """Append `<|im_start|> text <|im_end|>` (causal, und expert) to each context."""
        ctxs, texts = as_batch(ctxs, texts, str)
        segs = [self._text_segment(t) for t in texts]
        self._run(ctxs, segs, causal=True, update=True)

    @torch.no_grad()
    def append_image(
        self,
        ctxs: Contexts,
        images,
        *,
        vae: bool = True,
        vit: bool = True,
        generators: torch.Generator | Sequence[torch.Generator | None] | None = None,
        posterior_eps: Sequence[Tensor | None] | Tensor | None = None,
        resize: bool = True,
    ) -> list[tuple[int, int]]:
        """Append an image as clean VAE latents and/or ViT tokens (official order: VAE, ViT).

        The image is first resized with the VAE rule; the ViT input is the resized image
        resized again with the ViT rule (as the official inferencer does). The VAE
        posterior is sampled (stochastic, as officially): pass generators or explicit
        `posterior_eps` (1, z, h, w) for reproducible results. Returns the (H, W) used.
        """
        if not (vae or vit):
            raise ValueError("append_image needs vae=True, vit=True or both")
        ctxs, images = as_batch(ctxs, images, (Image.Image, np.ndarray))
        gens = per_item(generators, len(ctxs), "generators")
        epss = per_item(posterior_eps, len(ctxs), "posterior_eps")
        pils = [self.prepare_image(img) if resize else as_pil_rgb(img) for img in images]
        if vae:
            if (len(pils) > 1 and all(g is not None for g in gens) and all(e is None for e in epss)
                    and len({p.size for p in pils}) == 1):
                # One autoencoder call for the batch; item b gets the draw its own generator makes.
                pos = self._latent_positions((pils[0].height, pils[0].width))
                segs = [self._latent_block(t, torch.zeros(()), pos, "vae") for t in self.encode_images(pils, gens)]
            else:
                segs = [self._vae_segment(p, g, e) for p, g, e in zip(pils, gens, epss)]
            self._run(ctxs, segs, causal=False, update=True)
        if vit:
            segs = [self._vit_segment(p) for p in pils]
            self._run(ctxs, segs, causal=False, update=True)
        shapes = [(p.height, p.width) for p in pils]
        for c, s in zip(ctxs, shapes):
            c.image_shape = s
        return shapes

    @torch.no_grad()
    def append_latents(self, ctxs: Contexts, latents: Tensor, image_shape: tuple[int, int]) -> None:
        """Append already-encoded clean latent tokens (B, N, 64) as VAE blocks."""
        ctxs = ctx_list(ctxs)
        if latents.dim() == 2:
            latents = latents[None]
        if latents.shape[0] != len(ctxs):
            raise ValueError(f"got {latents.shape[0]} latent blocks for {len(ctxs)} contexts")
        pos = self._latent_positions(image_shape)
        segs = [self._latent_block(lat, torch.zeros(()), pos, "vae") for lat in latents]
        self._run(ctxs, segs, causal=False, update=True)
        for c in ctxs:
            c.image_shape = tuple(image_shape)

    # ---- segments --------------------------------------------------------------------
    def _segment_ids(self, text: str | Sequence[int]) -> list[int]:
        """`<|im_start|> text <|im_end|>` as token ids."""
        ids = self.tokenize(text) if isinstance(text, str) else [int(i) for i in text]
        return [self.token_ids["bos"], *ids, self.token_ids["eos"]]

    def _text_segment(self, text: str | Sequence[int]) -> Segment:
        ids = self._segment_ids(text)
        t = torch.tensor(ids, device=self.device)
        return Segment(self.model.embed_text(t), torch.arange(len(ids), device=self.device), None, len(ids), f"text({len(ids)})")

    def _markers(self) -> tuple[Tensor, Tensor]:
        ids = torch.tensor([self.token_ids["start_of_image"], self.token_ids["end_of_image"]], device=self.device)
        e = self.model.embed_text(ids)
        return e[0:1], e[1:2]

    def _latent_positions(self, image_shape: tuple[int, int]) -> Tensor:
        H, W = image_shape
        s = self.config.latent_downsample
        self.check_image_shape(image_shape)
        return flattened_position_ids(H // s, W // s, self.config.max_latent_size).to(self.device)

    def check_image_shape(self, image_shape: tuple[int, int]) -> None:
        """A ValueError unless latents of this (H, W) can be appended or generated."""
        H, W = (int(v) for v in image_shape)
        s, top = self.config.latent_downsample, self.config.max_image_side
        if H % s or W % s or not (s <= H <= top) or not (s <= W <= top):
            raise ValueError(
                f"image size {H}x{W} (HxW) cannot be generated; each side must be a multiple of {s} "
                f"between {s} and {top} px"
            )

    def _latent_block(self, tokens: Tensor, t: Tensor, pos: Tensor, label: str) -> Segment:
        soi, eoi = self._markers()
        lat = self.model.embed_latents(tokens.to(self.device), t, pos)
        embeds = torch.cat([soi, lat.to(soi.dtype), eoi])
        gen = torch.ones(embeds.shape[0], dtype=torch.bool, device=self.device)
        gen[0] = gen[-1] = False  # markers use the und expert
        zeros = torch.zeros(embeds.shape[0], dtype=torch.long, device=self.device)
        return Segment(embeds, zeros, gen, 1, f"{label}({lat.shape[0]})")

    def _vae_segment(self, pil: Image.Image, generator, eps) -> Segment:
        tokens = self.encode_image(pil, generator, eps)
        return self._latent_block(tokens, torch.zeros(()), self._latent_positions((pil.height, pil.width)), "vae")

    def _vit_segment(self, pil: Image.Image) -> Segment:
        tok = self.model.embed_vit(*self._vit_inputs(pil))
        soi, eoi = self._markers()
        embeds = torch.cat([soi, tok.to(soi.dtype), eoi])
        zeros = torch.zeros(embeds.shape[0], dtype=torch.long, device=self.device)
        return Segment(embeds, zeros, None, 1, f"vit({tok.shape[0]})")
