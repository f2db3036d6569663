"""Image preprocessing exactly as the official BAGEL code does it (upstream
`data/transforms.py :: ImageTransform`, `data/data_utils.py :: pil_img2rgb` and the
position-id functions beside it).

An input picture goes: `pil_img2rgb` -> `resize_image(*vae_transform)` -> `to_tensor`
(VAE input); and the *already VAE-resized* picture -> `resize_image(*vit_transform)` ->
`to_tensor` -> `patchify` (ViT input), with `flattened_position_ids` for both grids.
`as_pil_rgb` is the checked entry point for user-supplied images.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# 14 * 14 * 9 * 1024: the official ImageTransform default; it never binds for the app sizes.
MAX_PIXELS = 1_806_336

# Modes whose 8-bit conversion would clip (16/32-bit integer, float): the caller must scale.
_HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def pil_img2rgb(img: Image.Image) -> Image.Image:
    """RGB copy of `img`; images with alpha or a transparency key are composited on white.

    Same condition as the official `data_utils.pil_img2rgb`: mode RGBA, or a `transparency`
    entry in `img.info` (palette / keyed images). Other modes (LA included) go through
    `convert("RGB")`.
    """
    if img.mode == "RGBA" or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def _round_to_stride(v: float, stride: int) -> int:
    # Python's round() is half-to-even, as in the official code.
    return max(stride, int(round(v / stride) * stride))


def resize_size(
    w: int, h: int, max_size: int, min_size: int, stride: int, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Target (W', H') of `MaxLongEdgeMinShortEdgeResize` for a W x H image.

    1. scale = min(max_size / long side, 1), then max(scale, min_size / short side);
    2. each side -> round(side * scale) -> nearest multiple of `stride` (at least `stride`);
    3. if W' * H' > max_pixels, rescale both by max_pixels / (W' * H') the same way;
    4. if the long side > max_size, rescale both by max_size / long side the same way.
    """
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    if stride <= 0 or min_size <= 0 or max_size < stride:
        raise ValueError(f"bad resize settings max_size={max_size}, min_size={min_size}, stride={stride}")
    scale = min(max_size / max(w, h), 1.0)
    scale = max(scale, min_size / min(w, h))
    nw, nh = _round_to_stride(round(w * scale), stride), _round_to_stride(round(h * scale), stride)
    if nw * nh > max_pixels:
        scale = max_pixels / (nw * nh)
        nw, nh = _round_to_stride(round(nw * scale), stride), _round_to_stride(round(nh * scale), stride)
    if max(nw, nh) > max_size:
        scale = max_size / max(nw, nh)
        nw, nh = _round_to_stride(round(nw * scale), stride), _round_to_stride(round(nh * scale), stride)
    return nw, nh


def resize_image(
    img: Image.Image, max_size: int, min_size: int, stride: int, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """PIL bicubic resize to `resize_size(...)`; the image itself when the size already fits."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"resize_image takes a PIL image, got {type(img).__name__}")
    size = resize_size(img.width, img.height, max_size, min_size, stride, max_pixels)
    if size == img.size:
        return img
    return img.resize(size, Image.BICUBIC)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1] (ToTensor, then Normalize(0.5, 0.5))."""
    if not isinstance(img, Image.Image) or img.mode != "RGB":
        got = f"mode {img.mode!r}" if isinstance(img, Image.Image) else type(img).__name__
        raise TypeError(f"to_tensor takes an RGB PIL image (see as_pil_rgb), got {got}")
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    return x.sub(0.5).div(0.5)


def patchify(image_chw: torch.Tensor, p: int) -> torch.Tensor:
    """(C, H, W) -> (H/p * W/p, p*p*C): row-major patches, each flattened in (dy, dx, c) order."""
    if image_chw.ndim != 3:
        raise ValueError(f"patchify takes a (C, H, W) image, got shape {tuple(image_chw.shape)}")
    c, h, w = image_chw.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} (HxW) is not a multiple of the patch size {p}")
    x = image_chw.reshape(c, h // p, p, w // p, p).permute(1, 3, 2, 4, 0)
    return x.reshape((h // p) * (w // p), p * p * c)


def flattened_position_ids(h: int, w: int, max_per_side: int) -> torch.Tensor:
    """Position ids of an h x w patch grid in an M x M table (M = max_per_side): i*M + j, row-major."""
    if h <= 0 or w <= 0:
        raise ValueError(f"patch grid must be non-empty, got {h}x{w} (rows x cols)")
    if h > max_per_side or w > max_per_side:
        raise ValueError(
            f"patch grid {h}x{w} (rows x cols) exceeds the position table side {max_per_side}; "
            "ids would collide, so resize the image smaller"
        )
    rows = torch.arange(h).unsqueeze(1) * max_per_side
    return (rows + torch.arange(w).unsqueeze(0)).flatten()


def as_pil_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Checked conversion of a user image (PIL image, or (H, W, 3) uint8 array) to RGB PIL."""
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"empty image of size {image.width}x{image.height}")
        if image.mode in _HIGH_DEPTH_MODES:
            raise ValueError(
                f"PIL mode {image.mode!r} is a 16/32-bit image whose conversion to 8-bit RGB would clip; "
                "scale it to 8 bits first (accepted: 8-bit modes such as RGB, RGBA, L, LA, P)"
            )
        try:
            return pil_img2rgb(image)
        except (ValueError, OSError) as e:
            raise ValueError(f"cannot convert a PIL image of mode {image.mode!r} to RGB: {e}") from e
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image array must have dtype uint8 (values 0..255), got {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must have shape (H, W, 3), got {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"empty image array of shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image))
    raise TypeError(f"expected a PIL image or an (H, W, 3) uint8 numpy array, got {type(image).__name__}")


__all__ = [
    "MAX_PIXELS",
    "pil_img2rgb",
    "resize_size",
    "resize_image",
    "to_tensor",
    "patchify",
    "flattened_position_ids",
    "as_pil_rgb",
]
