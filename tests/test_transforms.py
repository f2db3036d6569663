"""Image preprocessing (upstream `data/transforms.py :: ImageTransform`) and the think-mode system prompts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from bagel_world.inference.prompts import GEN_THINK_SYSTEM_PROMPT, VLM_THINK_SYSTEM_PROMPT
from bagel_world.inference.transforms import (
    as_pil_rgb,
    flattened_position_ids,
    patchify,
    pil_img2rgb,
    resize_image,
    resize_size,
    to_tensor,
)

# original W x H -> VAE W x H (1024, 512, 16) -> ViT W x H (980, 224, 14) of the VAE-resized image
SIZE_TABLE = [
    ((1024, 1024), (1024, 1024), (980, 980)),
    ((1024, 768), (1024, 768), (980, 728)),
    ((1920, 1080), (1024, 576), (980, 546)),
    ((640, 480), (688, 512), (686, 518)),
    ((800, 600), (800, 608), (798, 602)),
    ((512, 512), (512, 512), (518, 518)),
    ((300, 200), (768, 512), (770, 518)),
    ((4000, 1000), (1024, 256), (980, 252)),
]


@pytest.mark.parametrize("orig, vae, vit", SIZE_TABLE)
def test_resize_table(orig, vae, vit):
    assert resize_size(*orig, 1024, 512, 16) == vae
    assert resize_size(*vae, 980, 224, 14) == vit


def test_resize_rounding_and_limits():
    # 4.375 -> 4 and 6.25 -> 6 strides; half-to-even: 40 / 16 = 2.5 -> 2.
    assert resize_size(100, 70, 128, 64, 16) == (96, 64)
    assert resize_size(40, 64, 128, 40, 16) == (32, 64)
    # max_pixels binds: 1024 x 1024 with a 256 x 256 pixel budget -> scaled by the area ratio 1/16.
    assert resize_size(1024, 1024, 1024, 16, 16, max_pixels=256 * 256) == (64, 64)


def test_resize_image_noop_and_bicubic():
    img = Image.new("RGB", (96, 64), (10, 20, 30))
    assert resize_image(img, 128, 64, 16) is img
    out = resize_image(img, 112, 56, 14)
    assert out.size == (98, 70)


def test_golden_context_pixels(conformance_dir):
    """edit_A: input -> VAE resize (128, 64, 16) -> ViT resize (112, 56, 14) -> tensor."""
    golden = load_file(conformance_dir / "golden" / "03_generation" / "edit_A.safetensors")
    img = pil_img2rgb(Image.open(conformance_dir / "golden" / "input_image.png"))
    vae_img = resize_image(img, 128, 64, 16)
    torch.testing.assert_close(to_tensor(vae_img)[None], golden["context_vae.input_pixels"], atol=1e-4, rtol=0)
    vit = to_tensor(resize_image(vae_img, 112, 56, 14))
    assert vit.shape == (3, 70, 98)
    torch.testing.assert_close(vit, golden["context_vit.pixel_values"], atol=1e-4, rtol=0)


def test_to_tensor_range():
    img = Image.fromarray(np.array([[[0, 255, 51]]], dtype=np.uint8))
    x = to_tensor(img)
    assert x.dtype == torch.float32 and x.shape == (3, 1, 1)
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 1.0, -0.6]))


def test_pil_img2rgb_composites_alpha_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    out = pil_img2rgb(rgba)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (10, 20, 30)
    assert pil_img2rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_patchify_order():
    p = 2
    img = torch.arange(3 * 4 * 6, dtype=torch.float32).reshape(3, 4, 6)
    tokens = patchify(img, p)
    assert tokens.shape == (2 * 3, 12)
    i, j, dy, dx, c = 1, 2, 1, 0, 2
    assert tokens[i * 3 + j, (dy * p + dx) * 3 + c] == img[c, i * p + dy, j * p + dx]
    with pytest.raises(ValueError, match="multiple of the patch size 2"):
        patchify(torch.zeros(3, 5, 6), 2)


def test_flattened_position_ids():
    ids = flattened_position_ids(2, 3, 70)
    assert ids.dtype == torch.long
    assert ids.tolist() == [0, 1, 2, 70, 71, 72]
    with pytest.raises(ValueError, match=r"71x3 .* 70"):
        flattened_position_ids(71, 3, 70)


def test_as_pil_rgb_accepts():
    arr = np.zeros((5, 7, 3), dtype=np.uint8)
    arr[..., 0] = 200
    img = as_pil_rgb(arr)
    assert img.mode == "RGB" and img.size == (7, 5) and img.getpixel((0, 0)) == (200, 0, 0)
    assert as_pil_rgb(Image.new("P", (3, 3))).mode == "RGB"
    assert as_pil_rgb(Image.new("RGBA", (3, 3), (1, 2, 3, 0))).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "bad, exc, pattern",
    [
        (np.zeros((4, 4, 3), dtype=np.float32), TypeError, "uint8.*float32"),
        (np.zeros((4, 4), dtype=np.uint8), ValueError, r"\(H, W, 3\).*\(4, 4\)"),
        (np.zeros((4, 4, 4), dtype=np.uint8), ValueError, r"\(H, W, 3\).*\(4, 4, 4\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), ValueError, "empty"),
        (Image.new("RGB", (0, 5)), ValueError, "empty.*0x5"),
        (Image.new("I;16", (4, 4)), ValueError, "'I;16'.*accepted"),
        (Image.new("La", (4, 4)), ValueError, "mode 'La'"),
        (torch.zeros(4, 4, 3), TypeError, "PIL image or an .*Tensor"),
        ("picture.png", TypeError, "str"),
    ],
    ids=["float", "2d", "4ch", "empty-array", "empty-pil", "16bit", "La", "tensor", "path"],
)
def test_as_pil_rgb_rejects(bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        as_pil_rgb(bad)


def test_system_prompts_exact():
    assert len(VLM_THINK_SYSTEM_PROMPT) == 227 and len(GEN_THINK_SYSTEM_PROMPT) == 209
    assert (
        hashlib.sha256(VLM_THINK_SYSTEM_PROMPT.encode()).hexdigest()
        == "5eff00888fdf6b912c3f9a80711933dd35cdd164d167cba6b2a5889c04d7b565"
    )
    assert (
        hashlib.sha256(GEN_THINK_SYSTEM_PROMPT.encode()).hexdigest()
        == "837914a3f5f8ec1be30d2fdb68f4e494a3d4767056100a113c4109af5367d390"
    )
