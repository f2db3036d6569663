"""FLUX autoencoder: key layout, parameter count, and the official 04_vae golden outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from bagel_world.config import AutoEncoderConfig
from bagel_world.inference.transforms import pil_img2rgb, resize_image, to_tensor
from bagel_world.model.autoencoder import AutoEncoder, latent_to_tokens, to_uint8, tokens_to_latent

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def kit_ae(conformance_dir):
    cfg = AutoEncoderConfig.from_json_dict(json.loads((conformance_dir / "model" / "ae_config.json").read_text()))
    ae = AutoEncoder(cfg).eval()
    ae.load_state_dict(load_file(conformance_dir / "model" / "ae.safetensors"), strict=True)
    return ae


@pytest.fixture(scope="module")
def golden(conformance_dir):
    return load_file(conformance_dir / "golden" / "04_vae" / "vae.safetensors")


def test_7b_layout_on_meta():
    with torch.device("meta"):
        ae = AutoEncoder(AutoEncoderConfig())
    sd = ae.state_dict()
    assert len(sd) == 244
    assert sum(p.numel() for p in ae.parameters()) == 83_819_683
    # Spot checks of names and shapes from the published file (the layout of upstream `modeling/autoencoder.py`).
    assert sd["encoder.down.1.block.0.nin_shortcut.weight"].shape == (256, 128, 1, 1)
    assert sd["encoder.down.2.downsample.conv.weight"].shape == (512, 512, 3, 3)
    assert "encoder.down.3.downsample.conv.weight" not in sd
    assert sd["encoder.conv_out.weight"].shape == (32, 512, 3, 3)
    assert sd["decoder.up.0.block.0.nin_shortcut.weight"].shape == (128, 256, 1, 1)
    assert sd["decoder.up.1.upsample.conv.weight"].shape == (256, 256, 3, 3)
    assert "decoder.up.0.upsample.conv.weight" not in sd
    assert "decoder.up.3.block.2.conv2.weight" in sd
    assert sd["decoder.mid.attn_1.proj_out.weight"].shape == (512, 512, 1, 1)
    assert sd["decoder.conv_out.weight"].shape == (3, 128, 3, 3)


def test_strict_load(kit_ae):
    assert kit_ae.config.ch == 32


def test_input_pixels_match_golden(conformance_dir, golden):
    img = pil_img2rgb(Image.open(conformance_dir / "golden" / "input_image.png"))
    x = to_tensor(resize_image(img, 128, 64, 16)).unsqueeze(0)
    torch.testing.assert_close(x, golden["encode.input_pixels"], **TOL)


@torch.no_grad()
def test_encode_matches_golden(kit_ae, golden):
    x = golden["encode.input_pixels"]
    torch.testing.assert_close(kit_ae.encode_moments(x), golden["encode.encoder_moments"], **TOL)
    z = kit_ae.encode(x, eps=golden["encode.posterior_eps"])
    torch.testing.assert_close(z, golden["encode.latent_sampled"], **TOL)
    torch.testing.assert_close(kit_ae.encode(x, sample=False), golden["encode.latent_mean"], **TOL)


@torch.no_grad()
def test_decode_matches_golden(kit_ae, golden):
    torch.testing.assert_close(
        kit_ae.decode(golden["encode.latent_sampled"]), golden["decode_of_sampled_latent"], **TOL
    )
    img = kit_ae.decode(golden["decode.input_latent"])
    torch.testing.assert_close(img, golden["decode.output_float"], **TOL)
    u8 = to_uint8(img)
    assert u8.dtype == np.uint8 and u8.shape == (64, 96, 3)
    diff = np.abs(u8.astype(np.int16) - golden["decode.output_uint8"].numpy().astype(np.int16))
    assert diff.max() <= 1


def test_latent_tokens_roundtrip(golden):
    z = golden["decode.input_latent"]  # (1, 16, 8, 12)
    tokens = latent_to_tokens(z)
    assert torch.equal(tokens, golden["decode.input_latent_tokens"])
    assert torch.equal(latent_to_tokens(z[0]), tokens)
    assert torch.equal(tokens_to_latent(tokens, 4, 6), z)


def test_latent_token_order():
    # Token (i, j) holds latent[c, 2i+py, 2j+px] at index (py*2 + px)*16 + c.
    z = torch.arange(16 * 4 * 6, dtype=torch.float32).reshape(16, 4, 6)
    tokens = latent_to_tokens(z)
    i, j, py, px, c = 1, 2, 1, 0, 5
    assert tokens[i * 3 + j, (py * 2 + px) * 16 + c] == z[c, 2 * i + py, 2 * j + px]
    # Odd sizes are cropped, as in the official code.
    assert latent_to_tokens(torch.zeros(16, 5, 7)).shape == (6, 64)


def test_to_uint8_truncates():
    img = torch.tensor([-1.0, 0.0, 0.999, 2.0]).reshape(1, 1, 4).expand(3, 1, 4)
    # 0.5*255 = 127.5 -> 127 (truncated), 0.9995*255 = 254.87 -> 254.
    assert to_uint8(img)[0, :, 0].tolist() == [0, 127, 254, 255]


@torch.no_grad()
def test_same_generator_same_sample(kit_ae, golden):
    x = golden["encode.input_pixels"]
    a = kit_ae.encode(x, generator=torch.Generator().manual_seed(7))
    b = kit_ae.encode(x, generator=torch.Generator().manual_seed(7))
    c = kit_ae.encode(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bad_shapes_raise(kit_ae):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        kit_ae.encode(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\)"):
        kit_ae.decode(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        tokens_to_latent(torch.zeros(24, 64), 4, 5)
