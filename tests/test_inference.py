"""The KV-cache engine: cache equals one packed pass, forks, batching, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bagel_world.inference.settings import SamplingSettings
from bagel_world.model.packing import split_attention_mask

FAST = SamplingSettings(num_timesteps=4, timestep_shift=3.0, cfg_text_scale=3.0, cfg_img_scale=1.5,
                        cfg_interval=(0.0, 1.0), cfg_renorm_type="global")


def _frame(seed=0, hw=(64, 64)):
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3)).astype(np.uint8)


def test_cached_prefill_equals_one_packed_forward(tiny_engine):
    """text | clean VAE image | ViT image | text, appended one by one == one packed pass."""
    eng = tiny_engine
    ctx = eng.new_context()
    pil = eng.prepare_image(_frame())
    eps = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    segs = [
        eng._text_segment("a red box"),
        eng._latent_block(eng.encode_image(pil, eps=eps), torch.zeros(()), eng._latent_positions((64, 64)), "vae"),
        eng._vit_segment(pil),
        eng._text_segment("turn left"),
    ]
    modes = ["causal", "full", "full", "causal"]
    for seg, mode in zip(segs, modes):
        eng._run([ctx], [seg], causal=mode == "causal", update=True)
    # The same sequence in one pass, positions and experts as the cache path assigns them.
    x, pos, gen, rope = [], [], [], 0
    for seg in segs:
        x.append(seg.embeds)
        pos.append(rope + seg.pos_offsets)
        gen.append(seg.gen_mask if seg.gen_mask is not None else torch.zeros(len(seg.embeds), dtype=torch.bool))
        rope += seg.rope_advance
    mask = split_attention_mask([len(s.embeds) for s in segs], modes)[None, None]
    out = eng.model.language_model(torch.cat(x)[None], torch.cat(pos)[None], torch.cat(gen)[None], mask, None)
    for layer, (k, v) in enumerate(out.new_kv):
        torch.testing.assert_close(ctx.kv[layer][0], k[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ctx.kv[layer][1], v[0], atol=1e-5, rtol=1e-5)
    assert ctx.rope == rope and ctx.length == sum(len(s.embeds) for s in segs)


def test_noise_split_is_invisible_to_later_tokens():
    m = split_attention_mask([3, 4, 2], ["causal", "noise", "causal"])
    assert not m[7:, 3:7].any() and m[3:7, 3:7].all() and m[3:7, :3].all() and m[7:, :3].all()


def test_fork_branches_are_independent(tiny_engine):
    eng = tiny_engine
    parent = eng.new_context()
    eng.append_text(parent, "start")
    before = [(k.clone(), v.clone()) for k, v in parent.kv]
    a, b = parent.fork(), parent.fork()
    eng.append_text(a, "turn left")
    eng.append_image(b, _frame(3), generators=torch.Generator().manual_seed(0))
    n = parent.length
    assert a.length == n + len(eng.tokenize("turn left")) + 2 and b.length > n
    for (k0, v0), (k, v) in zip(before, parent.kv):
        assert torch.equal(k0, k) and torch.equal(v0, v)
    assert a.segments[-1].startswith("text") and b.segments[-1].startswith("vit")


def _edit_contexts(eng, prompt, seed):
    return eng.build_contexts(["go", _frame(seed), prompt], generator=torch.Generator().manual_seed(seed))


def test_batched_generation_equals_one_by_one(tiny_engine):
    eng = tiny_engine
    reqs = [_edit_contexts(eng, "turn left 30 degrees", 0), _edit_contexts(eng, "a much longer instruction here", 1),
            _edit_contexts(eng, "wait", 2)]
    batched = eng.generate_image([r[0] for r in reqs], [r[1] for r in reqs], [r[2] for r in reqs], settings=FAST,
                                 generators=[torch.Generator().manual_seed(10 + i) for i in range(3)])
    for i, r in enumerate(reqs):
        one = eng.generate_image(*r, settings=FAST, generators=torch.Generator().manual_seed(10 + i))
        torch.testing.assert_close(batched.latents[i], one.latents[0], atol=1e-5, rtol=1e-5)
        assert np.abs(batched.images[i].astype(int) - one.images[0].astype(int)).max() <= 1


def test_batched_text_and_scores_equal_one_by_one(tiny_engine):
    eng = tiny_engine
    ctxs = [eng.new_context() for _ in range(2)]
    eng.append_text(ctxs, ["is the box red?", "where is the ball? tell me"])
    texts = eng.generate_text(ctxs, max_length=5)
    scores = eng.score_answers(ctxs, ["yes", "no", "maybe so"])
    for i, c in enumerate(ctxs):
        assert eng.generate_text(c, max_length=5) == [texts[i]]
        torch.testing.assert_close(eng.score_answers(c, ["yes", "no", "maybe so"])[0], scores[i], atol=1e-4, rtol=1e-5)


def test_generation_is_deterministic_under_a_generator(tiny_engine):
    eng = tiny_engine
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        ctxs = eng.build_contexts(["go", _frame(5), "turn left"], generator=g)
        runs.append(eng.generate_image(*ctxs, settings=FAST, generators=g).images[0])
    assert np.array_equal(runs[0], runs[1])
    g = torch.Generator().manual_seed(8)
    ctxs = eng.build_contexts(["go", _frame(5), "turn left"], generator=g)
    assert not np.array_equal(runs[0], eng.generate_image(*ctxs, settings=FAST, generators=g).images[0])


def test_sampled_text_is_deterministic_under_a_generator(tiny_engine):
    eng = tiny_engine
    ctx = eng.new_context()
    eng.append_text(ctx, "describe")
    a = eng.generate_text(ctx, max_length=8, do_sample=True, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = eng.generate_text(ctx, max_length=8, do_sample=True, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert a == b


@pytest.mark.parametrize("renorm", ["global", "channel", "text_channel"])
def test_other_paths_run(tiny_engine, renorm):
    """Text-to-image, VAE-only image, understanding with a ViT image, thinking mode."""
    eng = tiny_engine
    s = SamplingSettings(num_timesteps=3, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_renorm_type=renorm)
    res, thought = eng.interleave_generate(["a red ball on grass"], settings=s, image_shape=(48, 80),
                                           generator=torch.Generator().manual_seed(0))
    assert res.images[0].shape == (48, 80, 3) and thought is None
    ctx = eng.new_context()
    eng.append_image(ctx, _frame(1), vit=False, generators=torch.Generator().manual_seed(0))
    assert ctx.segments == ["vae(16)"]
    gen, _, _ = eng.build_contexts([_frame(2), "what is this?"], understanding=True)
    assert [s.split("(")[0] for s in gen.segments] == ["vit", "text"]
    assert isinstance(eng.generate_text(gen, max_length=4)[0], str)
    res, thought = eng.interleave_generate(["draw a cat"], settings=s, image_shape=(32, 32), think=True,
                                           max_think_tokens=4, generator=torch.Generator().manual_seed(0))
    assert isinstance(thought, str) and res.images[0].shape == (32, 32, 3)


def test_bad_inputs_raise_clear_errors(tiny_engine):
    eng = tiny_engine
    ctx = eng.new_context()
    with pytest.raises(ValueError, match="smaller than one 14x14 patch"):
        eng.append_image(ctx, np.zeros((8, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="too large"):
        eng.prepare_image(np.zeros((4100, 4100, 3), np.uint8))
    with pytest.raises((ValueError, TypeError), match="uint8"):
        eng.append_image(ctx, np.zeros((32, 32, 3), np.float32))
    with pytest.raises((ValueError, TypeError)):
        eng.append_image(ctx, np.zeros((32, 32, 2), np.uint8))
    with pytest.raises(ValueError, match="multiple of 16"):
        eng.generate_image(ctx, image_shape=(50, 64), settings=SamplingSettings(cfg_text_scale=1.0))
    with pytest.raises(ValueError, match="between 16 and 256"):
        eng.generate_image(ctx, image_shape=(512, 64), settings=SamplingSettings(cfg_text_scale=1.0))
    assert ctx.length == 0  # nothing was appended by the failed calls
    long = eng.new_context()
    long.rope = eng.max_positions - 3
    with pytest.raises(ValueError, match="past the model's limit of 32768 positions"):
        eng.append_text(long, "this text is too long to fit")
    with pytest.raises(ValueError, match="one per context"):
        eng.append_text([eng.new_context(), eng.new_context()], ["only one"])


def test_drop_segments_removes_exactly_their_cache_entries(tiny_engine):
    eng = tiny_engine
    ctx = eng.new_context()
    eng.append_text(ctx, "head")
    eng.append_image(ctx, _frame(1), generators=torch.Generator().manual_seed(0))
    eng.append_text(ctx, "turn left")
    eng.append_text(ctx, "tail")
    assert [s.split("(")[0] for s in ctx.segments] == ["text", "vae", "vit", "text", "text"]
    assert sum(ctx.segment_lengths) == ctx.length
    cut = ctx.drop_segments(1, 3)  # the image (vae, vit) and the action after it
    lens = ctx.segment_lengths
    keep = [(0, lens[0]), (sum(lens[:4]), ctx.length)]
    for (k0, v0), (k1, v1) in zip(ctx.kv, cut.kv):
        torch.testing.assert_close(k1, torch.cat([k0[:, a:b] for a, b in keep], dim=1), rtol=0, atol=0)
        torch.testing.assert_close(v1, torch.cat([v0[:, a:b] for a, b in keep], dim=1), rtol=0, atol=0)
    assert cut.segments == [ctx.segments[0], ctx.segments[4]] and cut.length == lens[0] + lens[4]
    assert cut.rope == ctx.rope and len(ctx.segments) == 5  # the original is untouched
    with pytest.raises(ValueError, match=r"cannot drop segments \[4, 6\) of a context with 5 segments"):
        ctx.drop_segments(4, 2)


def test_batched_encode_and_decode_match_one_by_one(tiny_engine):
    eng = tiny_engine
    pils = [eng.prepare_image(_frame(s)) for s in (1, 2, 3)]
    batch = eng.encode_images(pils, [torch.Generator().manual_seed(s) for s in (4, 5, 6)])
    single = torch.stack([eng.encode_image(p, torch.Generator().manual_seed(s)) for p, s in zip(pils, (4, 5, 6))])
    torch.testing.assert_close(batch, single, atol=1e-4, rtol=1e-4)
    imgs = eng.decode_batch(batch, (64, 64))
    for img, tok in zip(imgs, batch):
        diff = np.abs(img.astype(int) - eng.decode_tokens(tok, (64, 64)).astype(int))
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3) and diff.max() <= 1


@pytest.mark.parametrize("shared", [False, True])
def test_append_image_batch_encodes_in_one_call_with_each_items_draw(tiny_engine, shared):
    # Several images with generators: one autoencoder call, and each context gets the cache
    # it would get alone (a shared generator draws for the items in order, as one by one).
    eng = tiny_engine
    frames = [_frame(s) for s in (1, 2, 3)]
    gens = torch.Generator().manual_seed(7) if shared else [torch.Generator().manual_seed(s) for s in (4, 5, 6)]
    batch = [eng.new_context() for _ in frames]
    eng.append_image(batch, frames, generators=gens)
    shared_gen = torch.Generator().manual_seed(7)
    for i, (f, c) in enumerate(zip(frames, batch)):
        alone = eng.new_context()
        eng.append_image(alone, [f], generators=shared_gen if shared else torch.Generator().manual_seed(4 + i))
        assert alone.segments == c.segments and alone.length == c.length
        for (k0, v0), (k1, v1) in zip(alone.kv, c.kv):
            torch.testing.assert_close(k1, k0, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(v1, v0, atol=1e-4, rtol=1e-4)


def test_packed_answer_scores_equal_scoring_each_answer_alone(tiny_engine):
    # score_answers runs all answers of a context in one row, as independent causal blocks;
    # each answer must score exactly as its own `<|im_start|> answer <|im_end|>` row would.
    eng = tiny_engine
    ctxs = [eng.new_context() for _ in range(2)]
    eng.append_text(ctxs, ["how far is it?", "a longer question about the goal view, please"])
    eng.append_image(ctxs, [_frame(1), _frame(2)], generators=[torch.Generator().manual_seed(s) for s in (1, 2)])
    answers = ["0.25", "7", "maybe so", "1.75 m away", "no"]
    packed = eng.score_answers(ctxs, answers)
    for i, c in enumerate(ctxs):
        for j, a in enumerate(answers):
            ids = eng._segment_ids(a)
            with torch.no_grad():
                hidden, _ = eng._run([c], [eng._text_segment(ids[1:-1])], causal=True, update=False)
                logp = torch.log_softmax(eng.model.language_model.lm_head(hidden[0]).float(), dim=-1)
            alone = sum(float(logp[k, t]) for k, t in enumerate(ids[1:]))
            assert abs(float(packed[i, j]) - alone) < 1e-3, (i, a, float(packed[i, j]), alone)
    # The blocks must cover each row exactly.
    from bagel_world.inference.batching import attention_mask

    with pytest.raises(ValueError, match="blocks"):
        attention_mask([3], [4], True, "cpu", blocks=[2, 1])
