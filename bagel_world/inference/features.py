"""The model's own visual features: ViT inputs of an image, and its pooled SigLIP features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bagel_world.inference.images import ImageCodec
from bagel_world.inference.transforms import flattened_position_ids, patchify, resize_image, to_tensor


class VitFeatures(ImageCodec):
    """ViT patches of a (VAE-resized) image, and mean-pooled SigLIP features for goal rewards."""

    def _vit_inputs(self, pil: Image.Image) -> tuple[Tensor, Tensor, Tensor]:
        """ViT-resize a (VAE-resized) image -> patches (N, 3*p*p), position ids (N,), cu_seqlens."""
        p = self.config.vit.patch_size
        x = to_tensor(resize_image(pil, *self.config.vit_transform))
        patches = patchify(x, p).to(self.device)
        pos = flattened_position_ids(x.shape[1] // p, x.shape[2] // p, self.config.vit_max_num_patch_per_side)
        cu = torch.tensor([0, patches.shape[0]], dtype=torch.int32, device=self.device)
        return patches, pos.to(self.device), cu

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image | np.ndarray]) -> Tensor:
        """Mean-pooled SigLIP features of images (B, vit_hidden), unit norm.

        The model's own visual feature space; used for goal similarity rewards.
        """
        feats = [self.model.vit_features(*self._vit_inputs(self.prepare_image(img))).float().mean(0)
                 for img in images]
        f = torch.stack(feats)
        return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-8)

