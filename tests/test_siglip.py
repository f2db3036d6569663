"""SigLIP NaViT: 7B size, strict load of the kit's ViT weights, packing independence."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bagel_world.config import SiglipConfig
from bagel_world.inference.transforms import flattened_position_ids, patchify
from bagel_world.model.siglip_navit import SiglipVisionModel


def test_7b_size_on_meta():
    with torch.device("meta"):
        vit = SiglipVisionModel(SiglipConfig())
    assert len(vit.vision_model.encoder.layers) == 26
    assert sum(p.numel() for p in vit.parameters()) == 402_552_736
    sd = vit.state_dict()
    assert sd["vision_model.embeddings.patch_embedding.weight"].shape == (1152, 588)
    assert sd["vision_model.embeddings.position_embedding.weight"].shape == (4900, 1152)
    assert "vision_model.encoder.layers.25.mlp.fc2.bias" in sd
    assert "vision_model.encoder.layers.26.mlp.fc2.bias" not in sd


@pytest.fixture(scope="module")
def kit_vit(conformance_dir):
    cfg = SiglipConfig.from_json_dict(json.loads((conformance_dir / "model" / "vit_config.json").read_text()))
    sd = load_file(conformance_dir / "model" / "ema.safetensors")
    vit_sd = {k.removeprefix("vit_model."): v for k, v in sd.items() if k.startswith("vit_model.")}
    vit = SiglipVisionModel(cfg).eval()
    vit.load_state_dict(vit_sd, strict=True)
    return vit


def _pack(images: list[torch.Tensor], p: int, m: int):
    pixels = [patchify(x, p) for x in images]
    pos = [flattened_position_ids(x.shape[1] // p, x.shape[2] // p, m) for x in images]
    lens = torch.tensor([0] + [len(t) for t in pixels])
    return torch.cat(pixels), torch.cat(pos), torch.cumsum(lens, 0).to(torch.int32)


@torch.no_grad()
@pytest.mark.parametrize("sizes", [[(70, 98), (42, 56)], [(56, 56), (56, 56)]], ids=["unequal", "equal"])
def test_packing_matches_alone(kit_vit, sizes):
    cfg = kit_vit.config
    assert cfg.num_hidden_layers == 2  # the file says 3; one is dropped
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g) * 2 - 1 for h, w in sizes]
    out = kit_vit(*_pack(images, cfg.patch_size, cfg.num_patches_per_side))
    alone = [kit_vit(*_pack([x], cfg.patch_size, cfg.num_patches_per_side)) for x in images]
    assert out.shape == (sum(len(a) for a in alone), cfg.hidden_size)
    torch.testing.assert_close(out, torch.cat(alone), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_matches_transformers_siglip(kit_vit):
    """Independent check: HF SiglipVisionModel with the same weights on a full-size image."""
    tf = pytest.importorskip("transformers")
    cfg = kit_vit.config
    hf_cfg = tf.SiglipVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,
        vision_use_head=False,
    )
    hf = tf.SiglipVisionModel(hf_cfg).eval()
    sd = {k: v.clone() for k, v in kit_vit.state_dict().items()}
    p, c = cfg.patch_size, cfg.num_channels
    w = sd["vision_model.embeddings.patch_embedding.weight"]  # (hidden, p*p*c), (dy, dx, c) order
    sd["vision_model.embeddings.patch_embedding.weight"] = w.reshape(-1, p, p, c).permute(0, 3, 1, 2)
    # transformers 5 drops the `vision_model.` level in its state dict; older versions keep it.
    if not any(k.startswith("vision_model.") for k in hf.state_dict()):
        sd = {k.removeprefix("vision_model."): v for k, v in sd.items()}
    hf.load_state_dict(sd, strict=True)
    image = torch.rand(3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref = hf(pixel_values=image[None]).last_hidden_state[0]
    m = cfg.num_patches_per_side
    ours = kit_vit(*_pack([image], p, m))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_bad_inputs_raise(kit_vit):
    x = torch.zeros(4, 588)
    pos = torch.arange(4)
    with pytest.raises(ValueError, match="cu_seqlens"):
        kit_vit(x, pos, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(N, 588\)"):
        kit_vit(torch.zeros(4, 100), pos, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="position ids"):
        kit_vit(x, torch.tensor([0, 1, 2, 64]), torch.tensor([0, 4]))
