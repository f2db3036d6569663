"""Image generation: the guided flow sampler run over contexts, one network call per step.

`generate_image` integrates the latent tokens of one image per conditional context from
noise (t = 1) to data (t = 0) with Euler steps on the shifted time grid of
`bagel_world.inference.sampler`; where guidance is active, the text-free (and image-free)
contexts run in the same batch and their velocities are combined with the conditional one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bagel_world.inference import sampler
from bagel_world.inference.appending import ContextBuilding
from bagel_world.inference.batching import Contexts, attention_mask, ctx_list, need, per_item
from bagel_world.inference.context import Context
from bagel_world.inference.settings import SamplingSettings


@dataclass
class GenerationResult:
    images: list[np.ndarray]  # (H, W, 3) uint8 each
    latents: Tensor  # (B, N, patch_latent_dim) final latent tokens
    trace: list[dict[str, Any]] | None = None  # per step x_t, v_t, t (if asked)



class ImageGeneration(ContextBuilding):
    """The guided flow sampler over contexts, and the single network velocity it integrates."""

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
        # 1. The requests: B conditional contexts, one image size, their latent positions.
        settings = settings or SamplingSettings()
        ctxs = ctx_list(ctxs)
        B = len(ctxs)
        image_shape = image_shape or ctxs[0].image_shape
        if image_shape is None:
            raise ValueError("image_shape is required when the context holds no image")
        pos = self._latent_positions(image_shape)
        N = pos.shape[0]
        # 2. The rows of each network call: conditional, then text-free and image-free as guidance needs.
        rows, use_text, use_img = _guidance_rows(ctxs, cfg_text_ctxs, cfg_img_ctxs, settings)
        # 3. Start from noise; pad the rows' caches once for every step.
        x = self._initial_noise(B, N, noise, generators)
        past, kv_lens = self._pad_past(rows)
        ropes = torch.tensor([c.rope for c in rows], device=self.device)
        # 4. Integrate from t = 1 to 0: one (guided) velocity and one Euler step per grid point.
        ts, dts = sampler.timestep_grid(settings.num_timesteps, settings.timestep_shift)
        trace: list[dict[str, Any]] | None = [] if return_trace else None
        for i in _denoising_steps(len(ts), progress):
            t = float(ts[i])
            guided = use_text and sampler.guidance_active(t, settings.cfg_interval)
            v = self._step_velocity(x, ts[i], pos, ropes, past, kv_lens, guided=guided, use_img=use_img,
                                    settings=settings)
            if trace is not None:
                trace.append({"t": t, "x_t": x.clone(), "v_t": v.float().clone(), "guided": guided})
            x = sampler.euler_step(x, v, dts[i])
        # 5. Decode the final latent tokens, all images in one autoencoder call.
        images = self.decode_batch(x, image_shape)
        return GenerationResult(images=images, latents=x, trace=trace)

    def _step_velocity(self, x: Tensor, t: Tensor, pos: Tensor, ropes: Tensor, past: list[tuple[Tensor, Tensor]],
                       kv_lens: list[int], *, guided: bool, use_img: bool, settings: SamplingSettings) -> Tensor:
        """The velocity (B, N, 64) of one sampler step: one network call over the conditional rows,
        and over the guidance rows too when the step is guided, combined by CFG."""
        B = x.shape[0]
        R = len(ropes) if guided else B
        sub_past = past if R == len(ropes) else [(k[:R], v[:R]) for k, v in past]
        xr = x.repeat(R // B, 1, 1)
        v_all = self._velocity(xr, t, pos, ropes[:R], sub_past, kv_lens[:R])[0]
        v_c = v_all[:B]
        if not guided:
            return v_c
        return sampler.combine_guidance(
            v_c,
            v_all[B : 2 * B],
            v_all[2 * B : 3 * B] if use_img else None,
            settings.cfg_text_scale,
            settings.cfg_img_scale if use_img else 1.0,
            settings.cfg_renorm_type,
            settings.cfg_renorm_min,
        )

    def _initial_noise(self, B: int, N: int, noise: Tensor | None, generators) -> Tensor:
        D = self.config.patch_latent_dim
        if noise is not None:
            noise = noise if noise.dim() == 3 else noise[None]
            if tuple(noise.shape) != (B, N, D):
                raise ValueError(f"noise must have shape {(B, N, D)}, got {tuple(noise.shape)}")
            return noise.to(self.device, torch.float32)
        gens = per_item(generators, B, "generators")
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
        mask = attention_mask(kv_lens, [N + 2] * R, False, self.device)
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


def _guidance_rows(ctxs: list[Context], cfg_text_ctxs: Contexts | None, cfg_img_ctxs: Contexts | None,
                   settings: SamplingSettings) -> tuple[list[Context], bool, bool]:
    """The contexts of each network call (conditional, then text-free, then image-free, as the
    scales need), and whether text and image guidance are used."""
    B = len(ctxs)
    use_text = settings.cfg_text_scale > 1.0
    use_img = use_text and settings.cfg_img_scale > 1.0
    rows = list(ctxs)
    if use_text:
        rows += need(cfg_text_ctxs, B, "cfg_text_ctxs (cfg_text_scale > 1)")
    if use_img:
        rows += need(cfg_img_ctxs, B, "cfg_img_ctxs (cfg_img_scale > 1)")
    return rows, use_text, use_img


def _denoising_steps(n: int, progress: bool) -> Iterable[int]:
    """range(n), with a tqdm progress bar if asked."""
    steps: Iterable[int] = range(n)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="denoising", leave=False)
    return steps
