"""Interleaved text-image inference with a KV cache, as the official InterleaveInferencer.

`BagelInference` appends text and images to `Context`s, generates images with the guided
flow sampler, generates text, and scores candidate answers. Every method accepts several
contexts at once and runs them as one padded batch (one network call per layer per step);
results equal running the contexts one by one.

Randomness: every draw (initial noise, VAE posterior sample, text sampling) takes a
`torch.Generator` or an explicit tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bagel_world.config import BagelConfig
from bagel_world.inference import sampler
from bagel_world.inference.context import Context
from bagel_world.inference.prompts import GEN_THINK_SYSTEM_PROMPT, VLM_THINK_SYSTEM_PROMPT
from bagel_world.inference.settings import SamplingSettings
from bagel_world.inference.transforms import (
    as_pil_rgb,
    flattened_position_ids,
    patchify,
    resize_image,
    to_tensor,
)
from bagel_world.model.autoencoder import AutoEncoder, latent_to_tokens, to_uint8, tokens_to_latent
from bagel_world.model.bagel import Bagel
from bagel_world.model.qwen2_mot import KeyLayout
from bagel_world.model.tokens import special_token_ids

log = logging.getLogger(__name__)

# Input images larger than this are refused before any resize (decompression bombs).
MAX_INPUT_PIXELS = 4096 * 4096

Contexts = Context | Sequence[Context]


@dataclass
class _Segment:
    """One run of tokens to append to (or query against) one context."""

    embeds: Tensor  # (Q, H)
    pos_offsets: Tensor  # (Q,) added to the context's rope: arange for text, zeros for images
    gen_mask: Tensor | None  # (Q,) True where the gen expert applies
    rope_advance: int  # how far the context's rope moves after this segment
    label: str


@dataclass
class GenerationResult:
    images: list[np.ndarray]  # (H, W, 3) uint8 each
    latents: Tensor  # (B, N, patch_latent_dim) final latent tokens
    trace: list[dict[str, Any]] | None = None  # per step x_t, v_t, t (if asked)


class BagelInference:
    """The model, its autoencoder and tokenizer, and the operations on contexts."""

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

    def new_context(self) -> Context:
        cfg = self.config.llm
        empty = torch.zeros(cfg.num_key_value_heads, 0, cfg.head_dim, device=self.device, dtype=self.dtype)
        return Context(kv=[(empty, empty)] * cfg.num_hidden_layers)

    def tokenize(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    # ---- appending -------------------------------------------------------------------
    @torch.no_grad()
    def append_text(self, ctxs: Contexts, texts: str | Sequence[int] | Sequence[str | Sequence[int]]) -> None:
        """Append `<|im_start|> text <|im_end|>` (causal, und expert) to each context."""
        ctxs, texts = _as_batch(ctxs, texts, str)
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
        ctxs, images = _as_batch(ctxs, images, (Image.Image, np.ndarray))
        gens = _per_item(generators, len(ctxs), "generators")
        epss = _per_item(posterior_eps, len(ctxs), "posterior_eps")
        pils = [self.prepare_image(img) if resize else as_pil_rgb(img) for img in images]
        if vae:
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
        ctxs = _ctx_list(ctxs)
        if latents.dim() == 2:
            latents = latents[None]
        if latents.shape[0] != len(ctxs):
            raise ValueError(f"got {latents.shape[0]} latent blocks for {len(ctxs)} contexts")
        pos = self._latent_positions(image_shape)
        segs = [self._latent_block(lat, torch.zeros(()), pos, "vae") for lat in latents]
        self._run(ctxs, segs, causal=False, update=True)
        for c in ctxs:
            c.image_shape = tuple(image_shape)

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

    # ---- segments --------------------------------------------------------------------
    def _segment_ids(self, text: str | Sequence[int]) -> list[int]:
        """`<|im_start|> text <|im_end|>` as token ids."""
        ids = self.tokenize(text) if isinstance(text, str) else [int(i) for i in text]
        return [self.token_ids["bos"], *ids, self.token_ids["eos"]]

    def _text_segment(self, text: str | Sequence[int]) -> _Segment:
        ids = self._segment_ids(text)
        t = torch.tensor(ids, device=self.device)
        return _Segment(self.model.embed_text(t), torch.arange(len(ids), device=self.device), None, len(ids), f"text({len(ids)})")

    def _markers(self) -> tuple[Tensor, Tensor]:
        ids = torch.tensor([self.token_ids["start_of_image"], self.token_ids["end_of_image"]], device=self.device)
        e = self.model.embed_text(ids)
        return e[0:1], e[1:2]

    def _latent_positions(self, image_shape: tuple[int, int]) -> Tensor:
        H, W = image_shape
        s = self.config.latent_downsample
        self.check_image_shape(image_shape)
        return flattened_position_ids(H // s, W // s, self.config.max_latent_size).to(self.device)

    def _latent_block(self, tokens: Tensor, t: Tensor, pos: Tensor, label: str) -> _Segment:
        soi, eoi = self._markers()
        lat = self.model.embed_latents(tokens.to(self.device), t, pos)
        embeds = torch.cat([soi, lat.to(soi.dtype), eoi])
        gen = torch.ones(embeds.shape[0], dtype=torch.bool, device=self.device)
        gen[0] = gen[-1] = False  # markers use the und expert
        zeros = torch.zeros(embeds.shape[0], dtype=torch.long, device=self.device)
        return _Segment(embeds, zeros, gen, 1, f"{label}({lat.shape[0]})")

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

    @property
    def vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _vae_segment(self, pil: Image.Image, generator, eps) -> _Segment:
        tokens = self.encode_image(pil, generator, eps)
        return self._latent_block(tokens, torch.zeros(()), self._latent_positions((pil.height, pil.width)), "vae")

    def _vit_inputs(self, pil: Image.Image) -> tuple[Tensor, Tensor, Tensor]:
        """ViT-resize a (VAE-resized) image -> patches (N, 3*p*p), position ids (N,), cu_seqlens."""
        p = self.config.vit.patch_size
        x = to_tensor(resize_image(pil, *self.config.vit_transform))
        patches = patchify(x, p).to(self.device)
        pos = flattened_position_ids(x.shape[1] // p, x.shape[2] // p, self.config.vit_max_num_patch_per_side)
        cu = torch.tensor([0, patches.shape[0]], dtype=torch.int32, device=self.device)
        return patches, pos.to(self.device), cu

    def _vit_segment(self, pil: Image.Image) -> _Segment:
        tok = self.model.embed_vit(*self._vit_inputs(pil))
        soi, eoi = self._markers()
        embeds = torch.cat([soi, tok.to(soi.dtype), eoi])
        zeros = torch.zeros(embeds.shape[0], dtype=torch.long, device=self.device)
        return _Segment(embeds, zeros, None, 1, f"vit({tok.shape[0]})")

    # ---- the batched forward -----------------------------------------------------------
    def _run(self, ctxs: list[Context], segs: list[_Segment], *, causal: bool, update: bool, output_layers=False):
        """Run one segment per context as one padded batch; optionally append to caches.

        Returns (hidden (B, Qmax, H), lm output). Query rows past a segment's length are
        padding and must be ignored by the caller.
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
        mask = _attention_mask(kv_lens, q_lens, causal, self.device)
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

    # ---- image generation --------------------------------------------------------------
    def check_image_shape(self, image_shape: tuple[int, int]) -> None:
        H, W = (int(v) for v in image_shape)
        s, top = self.config.latent_downsample, self.config.max_image_side
        if H % s or W % s or not (s <= H <= top) or not (s <= W <= top):
            raise ValueError(
                f"image size {H}x{W} (HxW) cannot be generated; each side must be a multiple of {s} "
                f"between {s} and {top} px"
            )

    @torch.no_grad()
    def generate_image(
        self,
        ctxs: Contexts,
        cfg_text_ctxs: Contexts | None = None,
        cfg_img_ctxs: Contexts | None = None,
        *,
        image_shape: tuple[int, int] | None = None,
        settings: SamplingSettings | None = None,
        generators: torch.Generator | Sequence[torch.Generator | None] | None = None,
        noise: Tensor | None = None,
        return_trace: bool = False,
        progress: bool = False,
    ) -> GenerationResult:
        """Sample one image per conditional context, with text/image guidance.

        ctxs: conditional contexts; cfg_text_ctxs: the same minus the last text (used when
        cfg_text_scale > 1); cfg_img_ctxs: texts only (used when both scales > 1). All
        requests share one image size and one settings object; each has its own noise
        (`noise` (B, N, 64) or one generator each). One network call per step for all.
        """
        settings = settings or SamplingSettings()
        ctxs = _ctx_list(ctxs)
        B = len(ctxs)
        image_shape = image_shape or ctxs[0].image_shape
        if image_shape is None:
            raise ValueError("image_shape is required when the context holds no image")
        pos = self._latent_positions(image_shape)
        N = pos.shape[0]
        use_text = settings.cfg_text_scale > 1.0
        use_img = use_text and settings.cfg_img_scale > 1.0
        rows = list(ctxs)
        if use_text:
            rows += _need(cfg_text_ctxs, B, "cfg_text_ctxs (cfg_text_scale > 1)")
        if use_img:
            rows += _need(cfg_img_ctxs, B, "cfg_img_ctxs (cfg_img_scale > 1)")
        x = self._initial_noise(B, N, noise, generators)
        past, kv_lens = self._pad_past(rows)
        ropes = torch.tensor([c.rope for c in rows], device=self.device)
        ts, dts = sampler.timestep_grid(settings.num_timesteps, settings.timestep_shift)
        trace = [] if return_trace else None
        steps = range(len(ts))
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="denoising", leave=False)
        for i in steps:
            t = float(ts[i])
            guided = use_text and sampler.guidance_active(t, settings.cfg_interval)
            R = len(rows) if guided else B
            sub_past = past if R == len(rows) else [(k[:R], v[:R]) for k, v in past]
            xr = x.repeat(R // B, 1, 1)
            v_all = self._velocity(xr, ts[i], pos, ropes[:R], sub_past, kv_lens[:R])[0]
            v_c = v_all[:B]
            if guided:
                v = sampler.combine_guidance(
                    v_c,
                    v_all[B : 2 * B],
                    v_all[2 * B : 3 * B] if use_img else None,
                    settings.cfg_text_scale,
                    settings.cfg_img_scale if use_img else 1.0,
                    settings.cfg_renorm_type,
                    settings.cfg_renorm_min,
                )
            else:
                v = v_c
            if trace is not None:
                trace.append({"t": t, "x_t": x.clone(), "v_t": v.float().clone(), "guided": guided})
            x = sampler.euler_step(x, v, dts[i])
        images = self.decode_batch(x, image_shape)
        return GenerationResult(images=images, latents=x, trace=trace)

    def _initial_noise(self, B: int, N: int, noise: Tensor | None, generators) -> Tensor:
        D = self.config.patch_latent_dim
        if noise is not None:
            noise = noise if noise.dim() == 3 else noise[None]
            if tuple(noise.shape) != (B, N, D):
                raise ValueError(f"noise must have shape {(B, N, D)}, got {tuple(noise.shape)}")
            return noise.to(self.device, torch.float32)
        gens = _per_item(generators, B, "generators")
        # Drawn on the CPU in fp32 in the packed (N, 64) layout, as the official code does.
        return torch.stack([torch.randn(N, D, generator=g) for g in gens]).to(self.device)

    def _velocity(self, x_t: Tensor, t: Tensor, pos: Tensor, ropes: Tensor, past, kv_lens, output_layers=False):
        """One flow evaluation: (R, N, 64) noisy tokens at time t -> velocity (R, N, 64).

        Also returns the LM output and the query sequence (R, N+2, H) it was given."""
        R, N, _ = x_t.shape
        soi, eoi = self._markers()
        lat = self.model.embed_latents(x_t, t.reshape(1).expand(R), pos)
        seq = torch.cat([soi.expand(R, 1, -1), lat.to(soi.dtype), eoi.expand(R, 1, -1)], dim=1)
        positions = ropes[:, None].expand(R, N + 2)
        gen = torch.ones(R, N + 2, dtype=torch.bool, device=self.device)
        gen[:, 0] = gen[:, -1] = False
        mask = _attention_mask(kv_lens, [N + 2] * R, False, self.device)
        out = self.model.language_model(seq, positions, gen, mask, past, output_layers=output_layers)
        return self.model.llm2vae(out.hidden[:, 1:-1]), out, seq

    @torch.no_grad()
    def velocity(self, ctx: Context, x_t: Tensor, t: float, image_shape: tuple[int, int], output_layers=False):
        """The network's velocity for one context (no guidance).

        Returns (v (N, 64), lm output, query sequence (N+2, H))."""
        past, lens = self._pad_past([ctx])
        ropes = torch.tensor([ctx.rope], device=self.device)
        v, out, seq = self._velocity(x_t[None].to(self.device, torch.float32), torch.tensor([t], dtype=torch.float32),
                                     self._latent_positions(image_shape), ropes, past, lens, output_layers)
        return v[0], out, seq[0]

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

    # ---- official three-context interleaved generation ----------------------------------
    @torch.no_grad()
    def build_contexts(
        self,
        inputs: Sequence[str | Image.Image | np.ndarray],
        *,
        think: bool = False,
        understanding: bool = False,
        generator: torch.Generator | None = None,
        posterior_eps: Sequence[Tensor] | None = None,
    ) -> tuple[Context, Context, Context]:
        """The conditional, text-free and image-free contexts of `interleave_inference`.

        Text: cfg_text <- fork(gen) before appending to gen and cfg_img. Image: VAE
        (unless understanding) then ViT block to gen; cfg_text <- fork(gen); cfg_img gets
        no image. `posterior_eps` gives one explicit VAE noise tensor per input image.
        """
        gen, cfg_text, cfg_img = self.new_context(), self.new_context(), self.new_context()
        if think:
            prompt = VLM_THINK_SYSTEM_PROMPT if understanding else GEN_THINK_SYSTEM_PROMPT
            self.append_text([gen, cfg_img], [prompt, prompt])
        n_img = 0
        for item in inputs:
            if isinstance(item, str):
                cfg_text = gen.fork()
                self.append_text([gen, cfg_img], [item, item])
            else:
                eps = None if posterior_eps is None else [posterior_eps[n_img]]
                self.append_image(gen, [item], vae=not understanding, vit=True, generators=generator, posterior_eps=eps)
                n_img += 1
                cfg_text = gen.fork()
                cfg_text.image_shape = gen.image_shape
        cfg_img.image_shape = gen.image_shape
        return gen, cfg_text, cfg_img

    @torch.no_grad()
    def interleave_generate(
        self,
        inputs: Sequence[str | Image.Image | np.ndarray],
        *,
        settings: SamplingSettings | None = None,
        image_shape: tuple[int, int] | None = None,
        think: bool = False,
        max_think_tokens: int = 1000,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        posterior_eps: Sequence[Tensor] | None = None,
        return_trace: bool = False,
    ) -> tuple[GenerationResult, str | None]:
        """Generate an image from interleaved text and images (text-to-image or editing).

        Returns the result and the thinking text (None unless think=True). Image size is
        the last input image's VAE-resized size, else `image_shape` (default 1024x1024
        clipped to the model's largest side).
        """
        gen, cfg_text, cfg_img = self.build_contexts(
            inputs, think=think, generator=generator, posterior_eps=posterior_eps
        )
        thought = None
        if think:
            thought = self.generate_text(gen, max_length=max_think_tokens, generator=generator)[0]
            self.append_text(gen, thought)
        shape = gen.image_shape or image_shape or (min(1024, self.config.max_image_side),) * 2
        result = self.generate_image(
            gen, cfg_text, cfg_img, image_shape=shape, settings=settings,
            generators=generator, noise=noise, return_trace=return_trace,
        )
        return result, thought

    # ---- text ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate_text(
        self,
        ctxs: Contexts,
        *,
        max_length: int = 512,
        do_sample: bool = False,
        temperature: float = 0.3,
        generator: torch.Generator | None = None,
        return_details: bool = False,
    ):
        """Decode from `<|im_start|>` until `<|im_end|>` (at most max_length-1 new tokens).

        Greedy by default; sampling draws from softmax(logits / temperature) with no
        top-k/top-p. The given contexts are not changed (decoding runs on forks).
        Returns the texts, or with return_details a dict with token ids and step logits.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        work = [c.fork() for c in _ctx_list(ctxs)]
        B = len(work)
        eos = self.token_ids["eos"]
        cur = [self.token_ids["bos"]] * B
        seqs: list[list[int]] = [[] for _ in range(B)]
        logits_log: list[list[Tensor]] = [[] for _ in range(B)]
        active = list(range(B))
        for _ in range(max_length):
            for b in active:
                seqs[b].append(cur[b])
            ids = torch.tensor([cur[b] for b in active], device=self.device)
            emb = self.model.embed_text(ids)
            segs = [_Segment(emb[j : j + 1], torch.zeros(1, dtype=torch.long, device=self.device), None, 1, "tok")
                    for j in range(len(active))]
            hidden, _ = self._run([work[b] for b in active], segs, causal=True, update=True)
            logits = self.model.language_model.lm_head(hidden[:, 0]).float()
            if do_sample:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).tolist()
            else:
                nxt = logits.argmax(-1).tolist()
            still = []
            for j, b in enumerate(active):
                logits_log[b].append(logits[j].cpu())
                cur[b] = nxt[j]
                if nxt[j] != eos:
                    still.append(b)
            active = still
            if not active:
                break
        texts = [self.tokenizer.decode(s[1:], skip_special_tokens=False) for s in seqs]
        if return_details:
            return {"texts": texts, "tokens": seqs, "step_logits": [torch.stack(step) for step in logits_log]}
        return texts

    @torch.no_grad()
    def score_answers(self, ctxs: Contexts, answers: Sequence[str]) -> Tensor:
        """log P(answer) after each context, for each candidate answer: (B, A) float32.

        An answer is scored as the text segment `<|im_start|> answer <|im_end|>` the model
        would produce next (the closing token included), summed over its tokens.
        """
        ctxs = _ctx_list(ctxs)
        if not answers:
            raise ValueError("answers must not be empty")
        segs, targets, rows = [], [], []
        for c in ctxs:
            for a in answers:
                ids = self._segment_ids(a)
                segs.append(self._text_segment(ids[1:-1]))
                targets.append(ids[1:])
                rows.append(c)
        hidden, _ = self._run(rows, segs, causal=True, update=False)
        logp = torch.log_softmax(self.model.language_model.lm_head(hidden).float(), dim=-1)
        scores = torch.zeros(len(rows))
        for r, tgt in enumerate(targets):
            idx = torch.tensor(tgt, device=logp.device)
            scores[r] = logp[r, torch.arange(len(tgt), device=logp.device), idx].sum().cpu()
        return scores.view(len(ctxs), len(answers))

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image | np.ndarray]) -> Tensor:
        """Mean-pooled SigLIP features of images (B, vit_hidden), unit norm.

        The model's own visual feature space; used for goal similarity rewards.
        """
        feats = [self.model.vit_features(*self._vit_inputs(self.prepare_image(img))).float().mean(0)
                 for img in images]
        f = torch.stack(feats)
        return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-8)


# ---- helpers -------------------------------------------------------------------------------
def _attention_mask(kv_lens: Sequence[int], q_lens: Sequence[int], causal: bool, device) -> KeyLayout | None:
    """Each row's queries see its own cache and its own new keys (causal: j <= i)."""
    if len(kv_lens) == 1 and not causal:
        return None  # one row, no padding, full attention: the fused kernel as is
    return KeyLayout(tuple(int(t) for t in kv_lens), tuple(int(q) for q in q_lens), causal)


def _ctx_list(ctxs: Contexts) -> list[Context]:
    if isinstance(ctxs, Context):
        return [ctxs]
    ctxs = list(ctxs)
    if not ctxs or not all(isinstance(c, Context) for c in ctxs):
        raise TypeError("expected a Context or a non-empty sequence of Contexts")
    return ctxs


def _as_batch(ctxs: Contexts, items, single_types) -> tuple[list[Context], list]:
    single = isinstance(ctxs, Context)
    ctxs = _ctx_list(ctxs)
    if single and (isinstance(items, single_types) or (isinstance(items, (list, tuple)) and items and isinstance(items[0], int))):
        items = [items]
    items = list(items)
    if len(items) != len(ctxs):
        raise ValueError(f"got {len(items)} inputs for {len(ctxs)} contexts; give one per context")
    return ctxs, items


def _per_item(value, n: int, name: str) -> list:
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


def _need(ctxs: Contexts | None, n: int, what: str) -> list[Context]:
    if ctxs is None:
        raise ValueError(f"{what} must be given")
    lst = _ctx_list(ctxs)
    if len(lst) != n:
        raise ValueError(f"{what}: got {len(lst)} contexts for {n} requests")
    return lst
