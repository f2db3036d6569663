"""Our implementation against outputs of the official code (../shared/conformance).

Tolerances from the kit's README: 1e-4 for single passes, 1e-3 for multi-step sampling,
+-1 for uint8 images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from bagel_world.inference.load import load_bagel
from bagel_world.inference.sampler import combine_guidance, timestep_grid
from bagel_world.inference.settings import SamplingSettings

SINGLE = dict(atol=1e-4, rtol=1e-4)
MULTI = dict(atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def kit(conformance_dir):
    return conformance_dir


@pytest.fixture(scope="module")
def engine(kit):
    return load_bagel(kit / "model", device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def text_golden(kit):
    return load_file(kit / "golden/01_text/text.safetensors"), json.loads((kit / "golden/01_text/text.json").read_text())


@pytest.fixture(scope="module")
def edit_golden(kit):
    return load_file(kit / "golden/03_generation/edit_A.safetensors"), json.loads(
        (kit / "golden/03_generation/edit_A.json").read_text()
    )


@pytest.fixture(scope="module")
def edit_contexts(engine, kit, edit_golden):
    g, _ = edit_golden
    img = Image.open(kit / "golden/input_image.png")
    return engine.build_contexts(
        ["a red cat", img, "the cat on the mat"], posterior_eps=[g["context_vae.posterior_eps"]]
    )


def _kv(ctx, layer):
    k, v = ctx.kv[layer]
    return k.transpose(0, 1), v.transpose(0, 1)  # ours (kvh, T, d) -> official (T, kvh, d)


def test_tokenizer_matches_official_ids(engine, text_golden):
    _, meta = text_golden
    assert engine.tokenize(meta["single"]["prompts"][0]) == meta["single"]["token_ids_per_prompt"][0]
    for prompt, ids in zip(meta["packed2"]["prompts"], meta["packed2"]["token_ids_per_prompt"]):
        assert engine.tokenize(prompt) == ids


def test_text_prefill_logits_hidden_and_kv(engine, text_golden):
    g, meta = text_golden
    ctx = engine.new_context()
    hidden, out = engine._run([ctx], [engine._text_segment(meta["single"]["prompts"][0])], causal=True,
                              update=True, output_layers=True)
    torch.testing.assert_close(hidden[0], g["single.hidden_final_norm"], **SINGLE)
    torch.testing.assert_close(engine.model.language_model.lm_head(hidden[0]), g["single.logits"], **SINGLE)
    for layer in range(2):
        torch.testing.assert_close(out.layer_outputs[layer][0], g[f"single.layer{layer}_output"], **SINGLE)
        k, v = _kv(ctx, layer)
        torch.testing.assert_close(k, g[f"single.kv_cache.layer{layer}.key"], **SINGLE)
        torch.testing.assert_close(v, g[f"single.kv_cache.layer{layer}.value"], **SINGLE)
    assert (ctx.length, ctx.rope) == (meta["single"]["newlens"][0], meta["single"]["new_rope"][0])


def test_packed_prompts_equal_official_packed_call(engine, text_golden):
    g, meta = text_golden
    prompts = meta["packed2"]["prompts"]
    ctxs = [engine.new_context(), engine.new_context()]
    hidden, _ = engine._run(ctxs, [engine._text_segment(p) for p in prompts], causal=True, update=True)
    logits = engine.model.language_model.lm_head(hidden)
    n0, n1 = meta["packed2"]["text_token_lens"]
    torch.testing.assert_close(logits[0, :n0], g["packed2.logits"][:n0], **SINGLE)
    torch.testing.assert_close(logits[1, :n1], g["packed2.logits"][n0:], **SINGLE)
    for layer in range(2):
        k = torch.cat([_kv(ctxs[0], layer)[0], _kv(ctxs[1], layer)[0]])
        torch.testing.assert_close(k, g[f"packed2.kv_cache.layer{layer}.key"], **SINGLE)


def test_greedy_decoding(engine, text_golden):
    g, meta = text_golden
    ctx = engine.new_context()
    engine.append_text(ctx, meta["single"]["prompts"][0])
    d = engine.generate_text(ctx, max_length=6, return_details=True)
    assert d["tokens"][0] == meta["single"]["greedy"]["tokens_including_start_bos"]
    torch.testing.assert_close(d["step_logits"][0], g["single.greedy.step_logits"], **SINGLE)
    assert ctx.length == 11  # decoding ran on a fork


def test_edit_contexts_layout_and_kv(edit_contexts, edit_golden):
    g, meta = edit_golden
    for name, ctx in zip(("gen", "cfg_text", "cfg_img"), edit_contexts):
        want = meta["contexts_at_gen_image"][name]
        assert (ctx.length, ctx.rope) == (want["kv_lens"][0], want["ropes"][0]), name
        for layer in range(2):
            k, v = _kv(ctx, layer)
            torch.testing.assert_close(k, g[f"kv_cache.{name}.layer{layer}.key"], **SINGLE)
            torch.testing.assert_close(v, g[f"kv_cache.{name}.layer{layer}.value"], **SINGLE)
    assert edit_contexts[0].image_shape == tuple(meta["image_shape_HW"])


def test_full_guided_generation(engine, edit_contexts, edit_golden):
    g, meta = edit_golden
    st = meta["settings"]
    settings = SamplingSettings(
        num_timesteps=st["num_timesteps"], timestep_shift=st["timestep_shift"], cfg_text_scale=st["cfg_text_scale"],
        cfg_img_scale=st["cfg_img_scale"], cfg_interval=tuple(st["cfg_interval"]),
        cfg_renorm_type=st["cfg_renorm_type"], cfg_renorm_min=st["cfg_renorm_min"],
    )
    res = engine.generate_image(*edit_contexts, settings=settings, noise=g["init_noise"], return_trace=True)
    assert len(res.trace) == meta["num_denoise_steps"]
    for i, (step, want) in enumerate(zip(res.trace, meta["steps"])):
        assert step["t"] == pytest.approx(want["t"], abs=1e-6)
        assert step["guided"] == (want["cfg_text_scale_used"] > 1)
        torch.testing.assert_close(step["x_t"][0], g[f"step{i}.x_t"], **MULTI)
        torch.testing.assert_close(step["v_t"][0], g[f"step{i}.v_t"], **MULTI)
    torch.testing.assert_close(res.latents[0], g["final_latent_tokens"], **MULTI)
    img_f = engine.decode_tokens_float(res.latents[0], tuple(meta["image_shape_HW"]))
    torch.testing.assert_close(img_f, g["decoded_image_float"], **MULTI)
    diff = np.abs(res.images[0].astype(int) - g["decoded_image_uint8"].numpy().astype(int))
    assert diff.max() <= 1


def test_single_flow_evaluation_and_every_renorm(engine, edit_contexts, kit):
    s = load_file(kit / "golden/03_generation/single_step.safetensors")
    gen, cfg_text, cfg_img = edit_contexts
    v_c, out, seq = engine.velocity(gen, s["x_t"], 0.75, (64, 96), output_layers=True)
    torch.testing.assert_close(seq, s["v_cond.llm_input_sequence"], **SINGLE)
    for layer in range(2):
        torch.testing.assert_close(out.layer_outputs[layer][0], s[f"v_cond.layer{layer}_output"], **SINGLE)
    torch.testing.assert_close(out.hidden[0], s["v_cond.llm_output_normed"], **SINGLE)
    torch.testing.assert_close(
        engine.model.time_embedder(torch.tensor([0.75])), s["v_cond.time_embedding"], **SINGLE
    )
    torch.testing.assert_close(v_c, s["v_cond"], **SINGLE)
    v_t = engine.velocity(cfg_text, s["x_t"], 0.75, (64, 96))[0]
    v_i = engine.velocity(cfg_img, s["x_t"], 0.75, (64, 96))[0]
    torch.testing.assert_close(v_t, s["v_text_uncond"], **SINGLE)
    torch.testing.assert_close(v_i, s["v_img_uncond"], **SINGLE)
    cases = [("global", 3.0, 1.5, "v_cfg_A_global"), ("channel", 3.0, 1.5, "v_cfg_A_channel"),
             ("text_channel", 4.0, 2.0, "v_cfg_B_text_channel")]
    for kind, st, si, key in cases:
        v = combine_guidance(v_c[None], v_t[None], v_i[None], st, si, kind, 0.0)[0]
        torch.testing.assert_close(v, s[key], **SINGLE)


def test_timestep_grid_matches_official(edit_golden):
    _, meta = edit_golden
    ts, dts = timestep_grid(8, 3.0)
    assert ts.tolist() == pytest.approx([s["t"] for s in meta["steps"]], abs=1e-7)
    assert float(dts.sum()) == pytest.approx(1.0, abs=1e-6)
