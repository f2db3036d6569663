"""Interleaved text-image inference with a KV cache, as the official InterleaveInferencer.

`BagelInference` appends text and images to `Context`s, generates images with the guided
flow sampler, generates text, and scores candidate answers. Every method accepts several
contexts at once and runs them as one padded batch (one network call per layer per step);
results equal running the contexts one by one.

Randomness: every draw (initial noise, VAE posterior sample, text sampling) takes a
`torch.Generator` or an explicit tensor.

The class is composed of parts, one concern each (each builds on the ones before it):

- `forward.EngineBase`: the model, autoencoder, tokenizer and config; the batched forward.
- `images.ImageCodec`: input images checked and resized; VAE encoding and decoding.
- `features.VitFeatures`: ViT inputs and the pooled SigLIP features of images.
- `appending.ContextBuilding`: tokenizing, segments, and appending text/images/latents.
- `text.TextGeneration`: decoding text and scoring candidate answers.
- `generation.ImageGeneration`: the guided flow sampler.

This module adds the official three-context recipe (`build_contexts`, `interleave_generate`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bagel_world.inference.batching import Contexts
from bagel_world.inference.context import Context
from bagel_world.inference.generation import GenerationResult, ImageGeneration
from bagel_world.inference.images import MAX_INPUT_PIXELS
from bagel_world.inference.prompts import GEN_THINK_SYSTEM_PROMPT, VLM_THINK_SYSTEM_PROMPT
from bagel_world.inference.settings import SamplingSettings
from bagel_world.inference.text import TextGeneration

__all__ = ["BagelInference", "Contexts", "GenerationResult", "MAX_INPUT_PIXELS"]

log = logging.getLogger(__name__)


class BagelInference(TextGeneration, ImageGeneration):
    """The model, its autoencoder and tokenizer, and the operations on contexts."""

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
