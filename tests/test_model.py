"""Loading, checkpoint checks and the MoT routing rules, on tiny random checkpoints."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bagel_world.config import BagelConfig, preset
from bagel_world.inference.load import load_bagel
from bagel_world.model.checkpoint_io import save_checkpoint
from bagel_world.model.loader import CheckpointError, check_file, expected_state, parameter_counts


def test_strict_load_has_no_missing_or_unexpected_keys(tiny_ckpt):
    exp_ema, exp_ae = expected_state(BagelConfig.from_pretrained(tiny_ckpt))
    assert check_file(tiny_ckpt / "ema.safetensors", exp_ema).ok
    assert check_file(tiny_ckpt / "ae.safetensors", exp_ae).ok
    engine = load_bagel(tiny_ckpt)
    assert not any(p.is_meta for p in engine.model.parameters())
    assert not any(b.is_meta for b in engine.model.buffers())
    assert engine.dtype == torch.float32 and engine.device.type == "cpu"


def test_official_kit_loads_strictly(conformance_dir):
    engine = load_bagel(conformance_dir / "model")
    assert len(engine.model.state_dict()) == 111
    assert engine.token_ids == {"bos": 284, "eos": 285, "start_of_image": 286, "end_of_image": 287}


def test_7b_preset_layout_on_meta_device():
    ema, ae = expected_state(preset("bagel-7b-mot"))
    assert len(ema) == 1223 and len(ae) == 244
    counts = parameter_counts(preset("bagel-7b-mot"))
    assert counts["ema total"] == 14_607_260_128
    assert counts["autoencoder"] == 83_819_683
    assert ema["language_model.model.embed_tokens.weight"] == (152064, 3584)
    assert ema["language_model.model.layers.27.self_attn.k_proj_moe_gen.weight"] == (512, 3584)
    assert ema["language_model.model.layers.0.self_attn.q_norm_moe_gen.weight"] == (128,)
    assert ema["language_model.model.layers.3.mlp_moe_gen.down_proj.weight"] == (3584, 18944)
    assert ema["language_model.model.norm_moe_gen.weight"] == (3584,)
    assert ema["vit_model.vision_model.embeddings.patch_embedding.weight"] == (1152, 588)
    assert ema["vit_model.vision_model.embeddings.position_embedding.weight"] == (4900, 1152)
    assert "vit_model.vision_model.encoder.layers.25.mlp.fc2.bias" in ema
    assert "vit_model.vision_model.encoder.layers.26.mlp.fc2.bias" not in ema
    assert ema["latent_pos_embed.pos_embed"] == (4096, 3584)
    assert ema["vit_pos_embed.pos_embed"] == (4900, 3584)
    assert ema["time_embedder.mlp.2.weight"] == (3584, 3584)
    assert ema["vae2llm.weight"] == (3584, 64) and ema["llm2vae.weight"] == (64, 3584)
    assert ae["decoder.up.1.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert not any("rotary" in k or "inv_freq" in k for k in ema)


def test_save_and_reload_give_identical_outputs(tiny_engine, tmp_path):
    save_checkpoint(tmp_path / "copy", tiny_engine.config, tiny_engine.model, tiny_engine.vae)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copy(tiny_engine.checkpoint_dir / f, tmp_path / "copy" / f)
    again = load_bagel(tmp_path / "copy")
    outs = []
    for eng in (tiny_engine, again):
        ctx = eng.new_context()
        eng.append_text(ctx, "a red box")
        outs.append(eng.score_answers(ctx, ["yes", "no"]))
    assert torch.equal(outs[0], outs[1])


def _corrupt(src, dst, edit):
    shutil.copytree(src, dst)
    sd = load_file(dst / "ema.safetensors")
    edit(sd)
    save_file(sd, str(dst / "ema.safetensors"))
    return dst


def test_missing_tensor_is_named(tiny_ckpt, tmp_path):
    bad = _corrupt(tiny_ckpt, tmp_path / "bad", lambda sd: sd.pop("language_model.model.layers.1.mlp_moe_gen.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing\s+language_model\.model\.layers\.1\.mlp_moe_gen\.up_proj\.weight"):
        load_bagel(bad)


def test_misshaped_and_unexpected_tensors_are_named(tiny_ckpt, tmp_path):
    def edit(sd):
        sd["vae2llm.weight"] = torch.zeros(3, 3)
        sd["language_model.model.layers.0.extra.weight"] = torch.zeros(1)

    bad = _corrupt(tiny_ckpt, tmp_path / "bad", edit)
    with pytest.raises(CheckpointError) as e:
        load_bagel(bad)
    msg = str(e.value)
    assert "vae2llm.weight: expected [64, 64], found [3, 3]" in msg
    assert "unexpected language_model.model.layers.0.extra.weight" in msg


def test_unknown_path_and_missing_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        load_bagel(str(tmp_path / "nowhere" / "deeper"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="llm_config.json"):
        load_bagel(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="offline mode"):
        load_bagel("someone/not-cached-model")


def test_repo_id_goes_through_snapshot_download(tiny_ckpt, monkeypatch):
    calls = {}

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(tiny_ckpt)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    engine = load_bagel("ByteDance-Seed/BAGEL-7B-MoT")
    assert calls["repo_id"] == "ByteDance-Seed/BAGEL-7B-MoT"
    assert "*.safetensors" in calls["allow_patterns"] and "*.json" in calls["allow_patterns"]
    assert engine.checkpoint_dir == tiny_ckpt


def _text_logits(engine, text="the red cat"):
    ctx = engine.new_context()
    hidden, _ = engine._run([ctx], [engine._text_segment(text)], causal=True, update=False)
    return engine.model.language_model.lm_head(hidden[0])


def test_gen_expert_never_changes_text_logits_und_expert_does(tmp_path, tiny_ckpt):
    engine = load_bagel(tiny_ckpt)
    before = _text_logits(engine)
    with torch.no_grad():
        for name, p in engine.model.named_parameters():
            if "_moe_gen" in name:
                p.add_(torch.randn_like(p))
    assert torch.equal(_text_logits(engine), before)
    with torch.no_grad():
        engine.model.language_model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    assert not torch.allclose(_text_logits(engine), before)


def test_gen_expert_drives_latent_tokens(tiny_ckpt):
    import numpy as np

    engine = load_bagel(tiny_ckpt)
    ctx = engine.new_context()
    engine.append_text(ctx, "hi")
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    v0 = engine.velocity(ctx, x, 0.5, (64, 64))[0]
    with torch.no_grad():
        engine.model.language_model.model.layers[1].mlp_moe_gen.down_proj.weight.mul_(2.0)
    assert not torch.allclose(engine.velocity(ctx, x, 0.5, (64, 64))[0], v0)
    assert np.isfinite(v0.numpy()).all()


@pytest.mark.parametrize("file, edit, says", [
    ("llm_config.json", lambda d: d | {"hidden_size": "64"},
     "field 'hidden_size' is a string (\"64\"); accepted: a positive integer"),
    ("llm_config.json", lambda d: d | {"num_attention_heads": None}, "field 'num_attention_heads' is null"),
    ("llm_config.json", lambda d: d | {"rms_norm_eps": [1e-6]}, "field 'rms_norm_eps' is a list ([1e-06]); accepted: a number"),
    ("llm_config.json", lambda d: [d], "the top level is a list"),
    ("vit_config.json", lambda d: d | {"num_hidden_layers": True}, "field 'num_hidden_layers' is a boolean"),
    ("vit_config.json", lambda d: {k: v for k, v in d.items() if k != "num_hidden_layers"},
     "field 'num_hidden_layers' is missing"),
    ("ae_config.json", lambda d: {"params": d["params"] | {"ch_mult": "1,1,2,2"}}, "field 'ch_mult' is a string"),
    ("ae_config.json", lambda d: {"params": 3}, "field 'params' is an integer"),
    ("bagel_config.json", lambda d: d | {"transforms": []}, "field 'transforms' is a list"),
    ("bagel_config.json", lambda d: d | {"transforms": {"vae_transform": [128, 64]}},
     "field 'vae_transform' is a list ([128, 64]); accepted: a list of 3 positive integers"),
    ("bagel_config.json", lambda d: d | {"max_latent_size": 0}, "field 'max_latent_size' is an integer (0)"),
])
def test_config_files_with_wrong_types_name_the_file_field_and_what_is_accepted(tiny_ckpt, tmp_path, file, edit, says):
    import json

    from bagel_world.config import ConfigError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    (bad / file).write_text(json.dumps(edit(json.loads((bad / file).read_text()))))
    with pytest.raises(ConfigError) as e:
        BagelConfig.from_pretrained(bad)
    assert str(e.value).startswith(f"{bad / file}: ") and says in str(e.value), str(e.value)
    with pytest.raises(ConfigError):
        load_bagel(bad)


def test_a_truncated_safetensors_file_is_named(tiny_ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    path = bad / "ema.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"ema\.safetensors .* is not a readable safetensors file.*accepted"):
        load_bagel(bad)
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match=r"ema\.safetensors"):
        check_file(path, {})


@pytest.mark.parametrize("damage", ["truncate", "config"])
def test_gym_make_on_a_bad_checkpoint_raises_our_error_naming_the_file(tiny_ckpt, tmp_path, damage):
    """What a user of `gym.make(..., checkpoint=...)` sees: our error, naming the file, not a
    SafetensorError or TypeError from deep inside."""
    import json

    import gymnasium as gym

    import bagel_world  # noqa: F401  (registers the ids)
    from bagel_world.config import ConfigError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    if damage == "truncate":
        path = bad / "ema.safetensors"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path = bad / "llm_config.json"
        cfg = json.loads(path.read_text())
        cfg["hidden_size"] = "256"
        path.write_text(json.dumps(cfg))
    with pytest.raises((CheckpointError, ConfigError)) as e:
        gym.make("BagelNavigate-v0", checkpoint=str(bad), device="cpu")
    assert path.name in str(e.value), str(e.value)
