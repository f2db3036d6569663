"""The training pipeline end to end on a few synthetic trajectories (seconds, not hours)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bagel_world.training.data import Clip, ClipSampler, Shard, list_shards
from bagel_world.training.pipeline import TrainConfig, run_training


def _write_shards(root, task="navigate", E=6, T=4):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (E, 64, 64, 3)).astype(np.uint8)
    frames = np.stack([np.stack([np.roll(base[e], 4 * t, axis=1) for t in range(T + 1)]) for e in range(E)])
    acts = np.full((E, T), "turn left 30 degrees")
    qa_q = np.full((E, T + 1, 1), "Is the red box visible?")
    qa_a = np.full((E, T + 1, 1), "yes")
    Shard(task, frames, acts, qa_q, qa_a, np.arange(E)).save(root / task / "shard-00000.npz")
    return frames


def test_shard_roundtrip_and_validation(tmp_path):
    frames = _write_shards(tmp_path)
    [path] = list_shards(tmp_path)
    s = Shard.load(path)
    assert np.array_equal(s.frames, frames) and s.actions[0, 0] == "turn left 30 degrees"
    with pytest.raises(ValueError, match="actions must be"):
        Shard("navigate", frames, s.actions[:, :2], s.qa_q, s.qa_a, s.seeds)
    clip = ClipSampler([s], window=3, rng=np.random.default_rng(0)).sample()
    assert 2 <= len(clip.frames) <= 4 and len(clip.actions) == len(clip.frames) - 1


def test_pipeline_trains_exports_and_resumes(tmp_path):
    _write_shards(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "ckpt"), work=str(tmp_path / "work"),
                      ae_steps=2, world_steps=3, batch_size=2, holdout_episodes=1, hidden=32, layers=1, heads=2,
                      kv_heads=1, intermediate=64, vocab_size=300, window=2)
    out = run_training(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "work" / "loss.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and np.isfinite(log[-1]["loss"])
    # The export is a normal checkpoint: bf16 EMA weights, scenarios and templates.
    from safetensors import safe_open

    with safe_open(str(out / "ema.safetensors"), "pt") as f:
        assert f.get_tensor("vae2llm.weight").dtype == torch.bfloat16
    from bagel_world.simulator import make_simulator

    sim = make_simulator(out)
    assert sim.tasks()["navigate"].system_prompt == "task: navigate"
    start = np.load(out / "scenarios" / "navigate.npz")["frames"][0]
    sid = sim.open("navigate", [start])
    assert sim.step([sid], ["turn left 30 degrees"], [0])[0].frame.shape == (64, 64, 3)
    # Resume: asking for more steps continues from the saved state instead of restarting.
    cfg.world_steps = 4
    run_training(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "work" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 4]
    # The model card reads training.json: sizes, data, schedule, the given commands, eval table and limits.
    from bagel_world.training.card import write_model_card

    card = write_model_card(out, eval_md="| task | controllability |\n|---|---|\n| navigate | 0.50 |",
                            commands=["bagel-world record --out data/rec"], notes="- a stated limit").read_text()
    assert "LLM: hidden 32, 1 layers" in card and "4 of 4 AdamW steps" in card
    assert "clips of up to 3 frames" in card and "1 episodes per task held out" in card
    assert "bagel-world record --out data/rec" in card and "| navigate | 0.50 |" in card
    assert "## Limits" in card and "- a stated limit" in card
    assert "counterfactual groups" not in card  # this data has no branch recordings


def test_debias_ema_recovers_the_average_of_the_trained_weights():
    from bagel_world.training.world import debias_ema

    init = {"w": torch.randn(5)}
    thetas = [torch.randn(5) for _ in range(30)]
    d, ema = 0.9, init["w"].clone()
    for th in thetas:
        ema = d * ema + (1 - d) * th
    avg = sum((1 - d) * d ** (len(thetas) - 1 - k) * th for k, th in enumerate(thetas)) / (1 - d ** len(thetas))
    torch.testing.assert_close(debias_ema({"w": ema}, init, d, len(thetas))["w"], avg)


def test_init_resumes_from_a_checkpoint_and_plans_dropped_actions(tmp_path):
    from dataclasses import replace

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from bagel_world.training.pipeline import TASK_PROMPTS, _load_init
    from bagel_world.training.world import WorldTrainArgs, WorldTrainer

    _write_shards(tmp_path / "data")
    small = dict(ae_steps=2, world_steps=2, batch_size=2, holdout_episodes=1, hidden=32, layers=1, heads=2,
                 kv_heads=1, intermediate=64, vocab_size=300, window=2)
    first = run_training(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "a"), work=str(tmp_path / "wa"),
                                     **small), progress=False)
    # --init: the same tokenizer and autoencoder, and the weights to start from.
    second = run_training(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "b"), work=str(tmp_path / "wb"),
                                      init=str(first), action_dropout=0.5, context_noise=0.2, rope_gap=64,
                                      change_weight=2.0, timestep_shift=3.0, sample_steps=5, **small), progress=False)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    for k, v in load_file(first / "ae.safetensors").items():
        assert torch.equal(v, load_file(second / "ae.safetensors")[k]), k
    world = json.loads((second / "world.json").read_text())["tasks"]["navigate"]
    assert world["slide_window"] is True and world["sampling"]["num_timesteps"] == 5
    assert world["sampling"]["timestep_shift"] == 3.0
    # Planning a clip: a dropped action removes its text, never the frame to predict.
    init = _load_init(str(first))
    tok = AutoTokenizer.from_pretrained(str(first))
    clip = ClipSampler([Shard.load(list_shards(tmp_path / "data")[0])], 2, np.random.default_rng(0)).sample()
    texts = {}
    for dropout in (0.0, 1.0):
        tr = WorldTrainer(init.config, init.model, init.vae, tok,
                          WorldTrainArgs(task_prompts=TASK_PROMPTS, action_dropout=dropout))
        pl = tr.plan(clip, torch.Generator().manual_seed(0))
        assert sum(m == "noise" for m in pl.split_modes) == len(clip.frames) - 1
        texts[dropout] = sum(m == "causal" for m in pl.split_modes)  # task text, actions, question, answer
    assert texts[0.0] - texts[1.0] == len(clip.actions) >= 1
    # A rope gap moves every frame after the task text, and only those.
    gapped = WorldTrainer(init.config, init.model, init.vae, tok, WorldTrainArgs(task_prompts=TASK_PROMPTS, rope_gap=50))
    plain = gapped.plan(clip)
    gaps = {gapped.plan(clip, torch.Generator().manual_seed(s)).positions[-1] - plain.positions[-1] for s in range(8)}
    assert 0 in gaps and max(gaps) > 0 and max(gaps) < 50
    # Change weights: tokens that move from the previous frame weigh more; mean 1 + change_weight.
    tr = WorldTrainer(init.config, init.model, init.vae, tok, replace(gapped.args, change_weight=2.0))
    prev = torch.zeros(4, 8)
    tok_now = prev.clone()
    tok_now[0] = 1.0
    w = tr._change_weights(tok_now, prev)
    assert w[0] > w[1] == w[2] == w[3] == 1.0 and float(w.mean()) == pytest.approx(3.0, abs=1e-4)


def test_ae_finetune_adapts_the_init_autoencoder_to_frames_it_reconstructs_badly(tmp_path):
    """`--init X --ae-finetune N`: the init's autoencoder is trained N more steps on the new data (so
    colours it never saw come back), its latents recalibrated, and the world model trains on them."""
    from dataclasses import replace

    from safetensors.torch import load_file

    _write_shards(tmp_path / "data")
    small = dict(world_steps=1, batch_size=2, holdout_episodes=1, hidden=32, layers=1, heads=2, kv_heads=1,
                 intermediate=64, vocab_size=300, window=2, ae_batch_size=4)
    first = run_training(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "a"), work=str(tmp_path / "wa"),
                                     ae_steps=2, **small), progress=False)
    # New frames: flat panels of one colour each, unlike the noise the first autoencoder saw.
    colours = np.array([[230, 220, 0], [90, 30, 160], [0, 40, 230], [20, 200, 40], [200, 0, 0], [128, 128, 128]])
    panels = np.broadcast_to(colours[:, None, None, None, :], (6, 5, 64, 64, 3)).astype(np.uint8)
    Shard("navigate", panels, np.full((6, 4), "turn left 30 degrees"), np.full((6, 5, 1), "Is the red box visible?"),
          np.full((6, 5, 1), "yes"), np.arange(6)).save(tmp_path / "panels" / "navigate" / "shard-00000.npz")
    second = run_training(TrainConfig(data=str(tmp_path / "panels"), out=str(tmp_path / "b"), work=str(tmp_path / "wb"),
                                      init=str(first), ae_finetune=60, **small), progress=False)
    metrics = json.loads((tmp_path / "wb" / "ae_metrics.json").read_text())
    assert metrics["finetune_steps"] == 60 and metrics["from"] == str(first)
    assert metrics["recon_psnr_db"] > metrics["recon_psnr_db_before"] + 1, metrics
    a, b = load_file(first / "ae.safetensors"), load_file(second / "ae.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((second / "ae_config.json").read_text())["params"]
    # The recalibrated latents are exported.
    assert (cfg["scale_factor"], cfg["shift_factor"]) == pytest.approx((metrics["scale_factor"], metrics["shift_factor"]))
    # Without --ae-finetune the init's autoencoder is kept exactly.
    frozen = TrainConfig(data=str(tmp_path / "panels"), out=str(tmp_path / "c"), work=str(tmp_path / "wc"),
                         init=str(first), **small)
    third = run_training(frozen, progress=False)
    assert all(torch.equal(a[k], v) for k, v in load_file(third / "ae.safetensors").items())
    # A work folder keeps the autoencoder it was started with; asking for another one is refused.
    with pytest.raises(ValueError, match="holds the init's autoencoder kept frozen, not what --ae-finetune 60 asks"):
        run_training(replace(frozen, ae_finetune=60), progress=False)
    with pytest.raises(ValueError, match="fine-tuned 60 steps, not what --ae-finetune 0 asks; use a new --work"):
        run_training(TrainConfig(data=str(tmp_path / "panels"), out=str(tmp_path / "b"), work=str(tmp_path / "wb"),
                                 init=str(first), **small), progress=False)
    # A fine-tune never resumes from another run's state (here the frozen copy, which has no optimiser).
    (tmp_path / "wc" / "ae_metrics.json").unlink()
    with pytest.raises(ValueError, match="ae_state.pt is not a resumable state of this autoencoder run"):
        run_training(replace(frozen, ae_finetune=60), progress=False)


def test_branch_groups_share_their_state_and_differ_only_in_the_action(tmp_path):
    from bagel_world.training.data import Branches, BranchSampler, list_branches

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    N, C, K = 5, 3, 6
    rng = np.random.default_rng(1)
    canon = np.array([f"action {k}" for k in range(K)])
    b = Branches("navigate", frames[:N, :C].copy(), np.full((N, C - 1), "turn left 30 degrees"),
                 rng.integers(0, 256, (N, K, 64, 64, 3)).astype(np.uint8), canon, np.arange(N), np.full(N, C - 1))
    b.save(tmp_path / "navigate" / "branches-00000.npz")
    assert list_branches(tmp_path) == [tmp_path / "navigate" / "branches-00000.npz"]
    b = Branches.load(list_branches(tmp_path)[0])
    with pytest.raises(ValueError, match="outcomes must be"):
        Branches("navigate", b.context, b.context_actions, b.outcomes[:, :2], b.actions, b.seeds, b.steps)
    # Mirrored, a group stays one state: all of its clips are flipped, each with its own outcome.
    mirrored = BranchSampler(ClipSampler([s], window=3, rng=np.random.default_rng(0), mirror=1.0), [b],
                             branch_share=0.5, group=4).sample_group()
    for c in mirrored:
        p, k = c.key[1], c.key[2]
        assert np.array_equal(c.frames[-1], b.outcomes[p, k, :, ::-1])
        assert c.actions[:-1] == ["turn right 30 degrees"] * (len(c.frames) - 2)
    sampler = BranchSampler(ClipSampler([s], window=3, rng=np.random.default_rng(0)), [b], branch_share=0.5, group=4)
    for _ in range(10):
        batch = sampler.sample_batch(8)
        assert len(batch) == 8
        group, rest = batch[:4], batch[4:]
        # One state: the same history frames and actions; four different last actions, each
        # followed by its own recorded outcome.
        p = group[0].key[1]
        for c in group:
            assert np.array_equal(c.frames[:-1], group[0].frames[:-1]) and c.actions[:-1] == group[0].actions[:-1]
            k = int(np.flatnonzero(canon == c.actions[-1])[0])
            assert np.array_equal(c.frames[-1], b.outcomes[p, k]) and len(c.actions) == len(c.frames) - 1
        assert len({c.actions[-1] for c in group}) == 4
        assert all(c.key[0] >= 0 for c in rest)  # the rest are trajectory clips
    assert all(c.key[0] >= 0 for c in BranchSampler(sampler.clips, [b], branch_share=0.0).sample_batch(8))


def test_branch_groups_with_poses_ask_how_much_closer_each_action_brought_the_agent(tmp_path):
    from bagel_world.simulator.progress import STEP_BINS, STEP_QUESTION
    from bagel_world.training.data import Branches, BranchSampler

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    N, C, K = 3, 2, 6
    rng = np.random.default_rng(2)
    canon = np.array([f"action {k}" for k in range(K)])
    poses = np.zeros((N, 3), np.float32)  # at the origin; action k moves 0.1 k m along x, toward the goal at x = 2
    outcome_poses = np.zeros((N, K, 3), np.float32)
    outcome_poses[:, :, 0] = 0.1 * np.arange(K)
    goals = rng.integers(0, 256, (N, 64, 64, 3)).astype(np.uint8)
    b = Branches("navigate", frames[:N, :C].copy(), np.full((N, C - 1), "turn left 30 degrees"),
                 rng.integers(0, 256, (N, K, 64, 64, 3)).astype(np.uint8), canon, np.arange(N), np.full(N, C - 1),
                 poses=poses, outcome_poses=outcome_poses, goals=goals, goal_poses=np.tile([[2.0, 0, 0]], (N, 1)))
    asking = BranchSampler(ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0,
                                       step_share=1.0), [b], group=4)
    for _ in range(5):
        group = asking.sample_group()
        for c in group:
            p, k = c.key[1], c.key[2]
            assert c.question == STEP_QUESTION and np.array_equal(c.goal, goals[p])
            assert c.answer == STEP_BINS["navigate"].answer(0.1 * k)
    # Without step questions (or under the view rule) the groups ask nothing, as before.
    for sampler in (ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0),
                    ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0, step_share=1.0,
                                progress_rule="view")):
        assert all(c.question is None and c.goal is None for c in BranchSampler(sampler, [b], group=4).sample_group())


def test_mirrored_clips_flip_frames_and_swap_left_and_right():
    from bagel_world.training.data import Clip, mirror_clip

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    goal = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    clip = Clip("navigate", frames, ["turn left 30 degrees", "strafe right 0.5 m"],
                "Which way should you turn to face the goal?", "left", (0, 0, 0), goal=goal)
    m = mirror_clip(clip)
    assert np.array_equal(m.frames, frames[:, :, ::-1]) and np.array_equal(m.goal, goal[:, ::-1])
    assert m.actions == ["turn right 30 degrees", "strafe left 0.5 m"] and m.answer == "right"
    assert m.question == clip.question  # the question is asked as it was
    back = mirror_clip(m)
    assert np.array_equal(back.frames, frames) and back.actions == clip.actions and back.answer == "left"
    assert mirror_clip(Clip("navigate", frames, ["move forward 0.5 m"] * 2, "Is the red box on the left or the right?",
                            "ahead", (0, 0, 0))).answer == "ahead"
    assert mirror_clip(Clip("multiview", frames, ["orbit up 15 degrees"] * 2, "Is the red cube left of the blue ball?",
                            "yes", (0, 0, 0))).answer == "no"
    with pytest.raises(ValueError, match="task 'manipulate' has no mirror rule"):
        mirror_clip(Clip("manipulate", frames, ["wait"] * 2, None, None, (0, 0, 0)))


def test_the_sampler_mirrors_a_share_of_clips_and_draws_nothing_without(tmp_path):
    _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    # mirror=0 draws nothing more: the generator ends where one that never mirrors does
    off = ClipSampler([s], window=3, rng=np.random.default_rng(0), mirror=0.0)
    never = ClipSampler([s], window=3, rng=np.random.default_rng(0))
    never.maybe_mirror = lambda clips: clips  # type: ignore[method-assign]
    off.sample_batch(16), never.sample_batch(16)
    assert off.rng.bit_generator.state == never.rng.bit_generator.state
    flipped = ClipSampler([s], window=3, rng=np.random.default_rng(0), mirror=1.0).sample_batch(16)
    for c in flipped:
        e, t0 = c.key[1], c.key[2]
        assert np.array_equal(c.frames, s.frames[e, t0 : t0 + len(c.frames), :, ::-1])
        assert set(c.actions) == {"turn right 30 degrees"}
    half = ClipSampler([s], window=3, rng=np.random.default_rng(0), mirror=0.5).sample_batch(200)
    assert 70 < sum(c.actions[0] == "turn right 30 degrees" for c in half) < 130
    with pytest.raises(ValueError, match="mirror must be in"):
        ClipSampler([s], window=3, rng=np.random.default_rng(0), mirror=1.5)


def test_record_branches_replays_every_action_from_recorded_states(tmp_path, capsys):
    from bagel_world.sims import missing_packages
    from bagel_world.simulator.tasks import CANONICAL_ACTIONS
    from bagel_world.training.data import Branches, list_branches
    from bagel_world.training.recorder import record, record_branches

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")
    record("navigate", tmp_path, episodes=2, steps=5, seed=1000, uniform=1.0, progress=False)
    [path] = record_branches("navigate", tmp_path, points=2, context=2, max_step=4, progress=False)
    b = Branches.load(path)
    s = Shard.load(list_shards(tmp_path, "navigate")[0])
    canon = list(CANONICAL_ACTIONS["navigate"])
    assert b.outcomes.shape == (4, len(canon), 64, 64, 3) and b.context.shape == (4, 2, 64, 64, 3)
    for n in range(4):
        e, t = int(np.flatnonzero(s.seeds == b.seeds[n])[0]), int(b.steps[n])
        assert np.array_equal(b.context[n], s.frames[e, t - 1 : t + 1])
        assert list(b.context_actions[n]) == [str(s.actions[e, t - 1])]
        # The recorded action's branch is the recorded next frame (uniform=1: canonical actions).
        assert np.array_equal(b.outcomes[n, canon.index(str(s.actions[e, t]))], s.frames[e, t + 1])
        assert len({o.tobytes() for o in b.outcomes[n]}) > 1
        # Poses: the state's is the recording's, the recorded action's outcome pose its next one.
        assert np.array_equal(b.poses[n], s.poses[e, t]) and np.array_equal(b.goals[n], s.goals[e])
        assert np.allclose(b.outcome_poses[n, canon.index(str(s.actions[e, t]))], s.poses[e, t + 1], atol=1e-5)
        assert np.array_equal(b.goal_poses[n], s.goal_poses[e])
    # A second call finds the file and keeps it (resumable); a shard that replay cannot
    # reproduce is an error, not silently wrong data.
    assert record_branches("navigate", tmp_path, points=2, context=2, max_step=4, progress=False) == [path]
    # A file from before branches kept poses gets them: the same points, replayed and checked.
    kept = b.select(np.array([True, False, True, False]))  # what held-out filtering keeps: every field
    assert kept.num_points == 2 and np.array_equal(kept.outcome_poses, b.outcome_poses[[0, 2]])
    Branches(b.task, b.context, b.context_actions, b.outcomes, b.actions, b.seeds, b.steps).save(path)
    assert not Branches.load(path).has_progress
    from bagel_world.cli import main as cli_main

    assert cli_main(["record", "--task", "navigate", "--out", str(tmp_path), "--backfill-poses"]) == 0
    assert "navigate: 1 branch files in" in capsys.readouterr().out
    again = Branches.load(path)
    assert again.has_progress and np.array_equal(again.steps, b.steps) and np.array_equal(again.outcomes, b.outcomes)
    assert np.array_equal(again.outcome_poses, b.outcome_poses)
    with pytest.raises(ValueError, match="come together"):
        Branches(b.task, b.context, b.context_actions, b.outcomes, b.actions, b.seeds, b.steps, poses=b.poses)
    path.unlink()
    s.frames[:, 1:] = 0
    s.save(list_shards(tmp_path, "navigate")[0])
    with pytest.raises(RuntimeError, match="did not reproduce"):
        record_branches("navigate", tmp_path, points=2, context=2, max_step=4, progress=False)
    assert list_branches(tmp_path) == []


def test_record_keeps_the_layout_for_its_branches(tmp_path):
    import json

    from bagel_world.sims import missing_packages
    from bagel_world.training.data import Branches
    from bagel_world.training.recorder import record, record_branches

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")
    record("navigate", tmp_path, episodes=1, steps=4, seed=1000, uniform=1.0, progress=False,
           env_kwargs={"layout": "one_room"})
    assert json.loads((tmp_path / "navigate" / "env.json").read_text()) == {"layout": "one_room"}
    four = tmp_path / "four"
    record("navigate", four, episodes=1, steps=4, seed=1000, uniform=1.0, progress=False)
    assert not np.array_equal(Shard.load(list_shards(tmp_path, "navigate")[0]).frames,
                              Shard.load(list_shards(four, "navigate")[0]).frames)
    # Branches replay in the recorded layout (replay checks its frames against the recording).
    [path] = record_branches("navigate", tmp_path, points=1, context=2, max_step=3, progress=False)
    assert Branches.load(path).num_points == 1
    # One folder holds one layout: resuming with another is refused.
    with pytest.raises(ValueError, match="env kwargs {'layout': 'one_room'}, not {'layout': 'maze'}"):
        record("navigate", tmp_path, episodes=2, steps=4, seed=1000, progress=False, env_kwargs={"layout": "maze"})


def test_backfill_gives_old_navigate_shards_the_box_position(tmp_path):
    from bagel_world.sims import missing_packages
    from bagel_world.training.recorder import backfill_poses, record

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")
    [path] = record("navigate", tmp_path, episodes=2, steps=3, seed=1000, uniform=1.0, progress=False,
                    env_kwargs={"layout": "one_room"})
    new = Shard.load(path)
    assert new.poses.shape[-1] == 5 and np.allclose(new.poses[:, :, 3:], new.goal_poses[:, None, 3:])
    # A shard as recorded before the box position was kept: x, z, yaw only.
    old = Shard(new.task, new.frames, new.actions, new.qa_q, new.qa_a, new.seeds, new.goals, new.poses[..., :3],
                new.goal_poses[:, :3])
    old.save(path)
    assert backfill_poses(tmp_path, progress=False) == [path]
    back = Shard.load(path)
    assert np.allclose(back.poses, new.poses) and np.allclose(back.goal_poses, new.goal_poses)
    assert np.array_equal(back.frames, new.frames)
    assert backfill_poses(tmp_path, progress=False) == []  # complete shards are skipped
    # Poses the env's reset does not reproduce (another layout or env version) are refused.
    wrong = old.poses.copy()
    wrong[:, :, 0] += 1.0
    Shard(old.task, old.frames, old.actions, old.qa_q, old.qa_a, old.seeds, old.goals, wrong, old.goal_poses).save(path)
    with pytest.raises(ValueError, match="episode 0 \\(seed 1000\\): the env's reset gives start pose"):
        backfill_poses(tmp_path, progress=False)


@pytest.mark.parametrize("bad, message", [
    ({"judge_share": 1.5}, "--judge-share must be in \\[0, 1\\], got 1.5"),
    ({"mirror": -0.1}, "--mirror must be in"),
    ({"step_share": 2.0}, "--step-share must be in \\[0, 1\\], got 2.0"),
    ({"locate_share": -0.5}, "--locate-share must be in \\[0, 1\\], got -0.5"),
    ({"locate_share": 0.3, "locate_goal_share": 1.2}, "--locate-goal-share must be in \\[0, 1\\], got 1.2"),
    ({"locate_goal_share": 0.3}, "--locate-goal-share is a share of the location questions, and --locate-share is 0"),
    ({"ema_decay": 1.0}, "--ema-decay must be in \\[0, 1\\), got 1.0"),
    ({"ce_weight": -1.0}, "--ce-weight must be >= 0, got -1.0"),
    ({"world_steps": 0}, "--steps must be >= 1, got 0"),
    ({"ae_finetune": 100}, "--ae-finetune fine-tunes the autoencoder of --init; without --init use --ae-steps"),
    ({"ae_finetune": -1, "init": "ckpt"}, "--ae-finetune must be >= 0, got -1"),
])
def test_train_config_names_a_bad_value_and_what_is_accepted(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_progress_questions_show_the_goal_and_answer_from_poses(tmp_path):
    from bagel_world.simulator.progress import DISTANCE_BINS, DISTANCE_QUESTION, REACHED_QUESTION

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    E, T1 = frames.shape[:2]
    # Poses walk 1 m per step along x; the episode goal sits 3.2 m past the start.
    poses = np.zeros((E, T1, 3), np.float32)
    poses[:, :, 0] = np.arange(T1)
    goals = np.full((E, 64, 64, 3), 7, np.uint8)
    with pytest.raises(ValueError, match="all or none"):
        Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals=goals)
    s = Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals, poses, np.tile([[3.2, 0, 0]], (E, 1)))
    s.save(tmp_path / "p.npz")
    s = Shard.load(tmp_path / "p.npz")
    assert s.has_progress and s.episodes(slice(0, 2)).poses.shape == (2, T1, 3)
    sampler = ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0)
    seen = set()
    for _ in range(200):
        c = sampler.sample()
        assert c.goal is not None and c.question in (DISTANCE_QUESTION, REACHED_QUESTION)
        t = c.key[2] + len(c.frames) - 1
        if np.array_equal(c.goal, goals[0]):
            d = abs(3.2 - t)
        else:  # a hindsight goal: a frame of the same episode, whose pose is its index
            g = next(g for g in range(T1) if np.array_equal(c.goal, frames[c.key[1], g]))
            d = abs(g - t)
        expected = DISTANCE_BINS["navigate"].answer(d) if c.question == DISTANCE_QUESTION else \
            ("yes" if d <= 0.5 else "no")
        assert c.answer == expected, (c.question, c.answer, d)
        seen.add((c.question, c.answer))
    assert ("Have you reached the goal view?", "yes") in seen and len(seen) >= 4
    # Without progress_share the same shard asks its state questions, with no goal.
    plain = ClipSampler([s], window=2, rng=np.random.default_rng(0)).sample()
    assert plain.goal is None and plain.question == "Is the red box visible?"
    # judge_share: that share of the progress questions is asked of the last frame alone.
    judge = ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0, judge_share=0.5)
    lone = [c for c in (judge.sample() for _ in range(200)) if len(c.frames) == 1]
    assert 60 < len(lone) < 140 and all(c.actions == [] and c.goal is not None for c in lone)
    for c in lone:  # the answer is about that frame: the key names it
        assert np.array_equal(c.frames[0], frames[c.key[1], c.key[2]])
        if c.question == REACHED_QUESTION and np.array_equal(c.goal, frames[c.key[1], c.key[2]]):
            assert c.answer == "yes"
    with pytest.raises(ValueError, match="judge_share must be in"):
        ClipSampler([s], window=2, rng=np.random.default_rng(0), judge_share=1.5)


def test_step_questions_answer_how_much_closer_the_last_step_brought_the_agent(tmp_path):
    from bagel_world.simulator.progress import DISTANCE_QUESTION, REACHED_QUESTION, STEP_BINS, STEP_QUESTION

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    E, T1 = frames.shape[:2]
    # Poses walk 0.3 m per step along x; the episode goal sits 1 m past the start, so the steps
    # come 0.3 m closer, then 0.1 m (passing it), then go away.
    poses = np.zeros((E, T1, 3), np.float32)
    poses[:, :, 0] = 0.3 * np.arange(T1)
    goals = np.full((E, 64, 64, 3), 7, np.uint8)
    s = Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals, poses, np.tile([[1.0, 0, 0]], (E, 1)))
    sampler = ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0, step_share=0.5,
                          judge_share=1.0)
    bins, seen, n_step = STEP_BINS["navigate"], set(), 0
    for _ in range(300):
        c = sampler.sample()
        if c.question != STEP_QUESTION:  # the others, all asked of the last frame alone here
            assert c.question in (DISTANCE_QUESTION, REACHED_QUESTION) and len(c.frames) == 1
            continue
        n_step += 1
        assert len(c.frames) >= 2 and len(c.actions) == len(c.frames) - 1  # never cut to one frame
        t = c.key[2] + len(c.frames) - 1
        if np.array_equal(c.goal, goals[0]):
            g = 1.0
        else:  # a hindsight goal: a frame of the same episode
            g = 0.3 * next(g for g in range(T1) if np.array_equal(c.goal, frames[c.key[1], g]))
        closer = abs(g - 0.3 * (t - 1)) - abs(g - 0.3 * t)
        assert c.answer == bins.answer(closer), (t, g, c.answer)
        seen.add(c.answer)
    assert 100 < n_step < 200 and {"0.25", "-0.25"} <= seen
    with pytest.raises(ValueError, match="step_share must be in"):
        ClipSampler([s], window=2, rng=np.random.default_rng(0), step_share=-0.1)


def test_location_questions_ask_where_the_last_frame_was_taken(tmp_path):
    from bagel_world.simulator.progress import LOCATE_QUESTIONS, LOCATION_BINS, STEP_QUESTION

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    E, T1 = frames.shape[:2]
    # Poses walk 1.1 m per step along x from 0.4, z = 2.6 + episode, heading 40 degrees per step.
    poses = np.zeros((E, T1, 3), np.float32)
    poses[:, :, 0] = 0.4 + 1.1 * np.arange(T1)
    poses[:, :, 1] = 2.6 + np.arange(E)[:, None]
    poses[:, :, 2] = 40.0 * np.arange(T1)
    goals = np.full((E, 64, 64, 3), 7, np.uint8)
    s = Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals, poses, np.tile([[1.0, 0, 0]], (E, 1)))
    sampler = ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0, step_share=1.0,
                          locate_share=0.5, mirror=1.0)
    bins, seen, n = LOCATION_BINS["navigate"], set(), 0
    for _ in range(300):
        c = sampler.sample()
        if c.question not in LOCATE_QUESTIONS:
            assert c.question == STEP_QUESTION
            continue
        n += 1
        # one frame, no action, no goal; never mirrored (the frame is the recorded one)
        e, t = c.key[1], c.key[2]
        assert len(c.frames) == 1 and c.actions == [] and c.goal is None
        assert np.array_equal(c.frames[0], frames[e, t])
        x, z, yaw = 0.4 + 1.1 * t, 2.6 + e, (40.0 * t) % 360
        expected = {LOCATE_QUESTIONS[0]: f"{np.floor((8 - x) / 0.5) * 0.5 + 0.25:g}",  # the green wall: x = 8
                    LOCATE_QUESTIONS[1]: f"{np.floor(z / 0.5) * 0.5 + 0.25:g}",
                    LOCATE_QUESTIONS[2]: f"{(round(yaw / 15) * 15) % 360:d}"}[c.question]
        assert c.answer == expected == bins.answer(c.question, poses[e, t]), (c.question, e, t, c.answer)
        seen.add(c.question)
    assert 100 < n < 200 and seen == set(LOCATE_QUESTIONS)
    # poses off the floor the bins cover (another layout) are refused, naming the layout
    far = Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals, poses - 5.0, s.goal_poses)
    with pytest.raises(ValueError, match="bins for the one_room layout, x and z in \\[0, 8\\] m"):
        ClipSampler([far], window=2, rng=np.random.default_rng(0), locate_share=0.5)
    ClipSampler([far], window=2, rng=np.random.default_rng(0))  # no location questions: no check
    with pytest.raises(ValueError, match="locate_share must be in"):
        ClipSampler([s], window=2, rng=np.random.default_rng(0), locate_share=1.5)


def test_location_questions_of_the_goal_image_answer_from_the_goal_pose(tmp_path):
    """locate_goal_share: that share of the location questions shows the episode's goal image
    alone and answers from its goal pose; the rest are asked of walk frames as before."""
    from bagel_world.simulator.progress import LOCATE_QUESTIONS, LOCATION_BINS

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    E, T1 = frames.shape[:2]
    poses = np.zeros((E, T1, 3), np.float32)
    poses[:, :, 0], poses[:, :, 1], poses[:, :, 2] = 0.4 + 1.1 * np.arange(T1), 2.6, 40.0 * np.arange(T1)
    goals = (np.arange(E)[:, None, None, None] * 10 + np.zeros((E, 64, 64, 3))).astype(np.uint8)
    goal_poses = np.stack([6.9 - 0.5 * np.arange(E), 1.1 + np.arange(E), 90.0 + 30 * np.arange(E)], 1).astype(np.float32)
    s = Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals, poses, goal_poses)
    sampler = ClipSampler([s], window=2, rng=np.random.default_rng(0), locate_share=1.0, locate_goal_share=0.25)
    bins, n_goal, seen = LOCATION_BINS["navigate"], 0, set()
    for _ in range(400):
        c = sampler.sample()
        assert c.question in LOCATE_QUESTIONS and len(c.frames) == 1 and c.actions == [] and c.goal is None
        e, t = c.key[1], c.key[2]
        if t == -1:  # the goal image, answered from the goal pose
            n_goal += 1
            assert np.array_equal(c.frames[0], goals[e]) and c.answer == bins.answer(c.question, goal_poses[e])
            seen.add(c.question)
        else:
            assert np.array_equal(c.frames[0], frames[e, t]) and c.answer == bins.answer(c.question, poses[e, t])
    assert 70 < n_goal < 130 and seen == set(LOCATE_QUESTIONS)
    # goal poses are checked against the floor the bins cover as well
    off = Shard(s.task, s.frames, s.actions, s.qa_q, s.qa_a, s.seeds, goals, poses, goal_poses + [9.0, 0, 0])
    with pytest.raises(ValueError, match="bins for the one_room layout, x and z in \\[0, 8\\] m"):
        ClipSampler([off], window=2, rng=np.random.default_rng(0), locate_share=0.5, locate_goal_share=0.5)
    ClipSampler([off], window=2, rng=np.random.default_rng(0), locate_share=0.5)  # walk frames only: no check
    with pytest.raises(ValueError, match="locate_goal_share must be in"):
        ClipSampler([s], window=2, rng=np.random.default_rng(0), locate_share=0.5, locate_goal_share=-0.1)


def test_location_questions_are_refused_on_recordings_of_another_layout(tmp_path):
    import json

    from bagel_world.training.pipeline import run_training

    _write_shards(tmp_path)
    for env, recorded in (({"layout": "four_rooms"}, "layout 'four_rooms', landmarks False"),
                          ({"layout": "one_room"}, "layout 'one_room', landmarks False")):
        (tmp_path / "navigate" / "env.json").write_text(json.dumps(env))
        with pytest.raises(ValueError, match=f"'one_room' layout with its coloured wall panels .* in {recorded}"):
            run_training(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), work=str(tmp_path / "w"),
                                     locate_share=0.5), progress=False)


def test_progress_questions_under_the_view_rule(tmp_path):
    """progress_rule="view": distances to the circle around the box the goal view is taken on,
    "reached" only where the frame shows the box ahead, and hindsight goals only from frames
    that would pass as a goal view."""
    from bagel_world.simulator.progress import DISTANCE_BINS, DISTANCE_QUESTION, REACHED_QUESTION

    frames = _write_shards(tmp_path)
    s = Shard.load(list_shards(tmp_path)[0])
    E, T1 = frames.shape[:2]
    # The box stands at x = 6; the agent walks toward it along +x (yaw 0 faces +x), 1 m per
    # step from x = 0, and sees it in every frame but the second.
    poses = np.zeros((E, T1, 5), np.float32)
    poses[:, :, 0], poses[:, :, 3] = np.arange(T1), 6.0
    goal_poses = np.tile([[3.2, 0.0, 0.0, 6.0, 0.0]], (E, 1)).astype(np.float32)  # 2.8 m from the box
    qa_a = s.qa_a.copy()
    qa_a[:, 1] = "no"
    goals = np.full((E, 64, 64, 3), 7, np.uint8)
    s = Shard(s.task, s.frames, s.actions, s.qa_q, qa_a, s.seeds, goals, poses, goal_poses)
    sampler = ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_share=1.0, progress_rule="view")
    hindsight, seen = set(), set()
    for _ in range(300):
        c = sampler.sample()
        t = c.key[2] + len(c.frames) - 1
        if np.array_equal(c.goal, goals[0]):
            goal_box = 2.8
        else:
            g = next(g for g in range(T1) if np.array_equal(c.goal, frames[c.key[1], g]))
            hindsight.add(g)
            goal_box = 6.0 - g
        d = abs((6.0 - t) - goal_box)
        expected = DISTANCE_BINS["navigate"].answer(d) if c.question == DISTANCE_QUESTION else \
            ("yes" if d <= 0.5 and t != 1 else "no")
        assert c.answer == expected, (c.question, c.answer, t, d)
        seen.add((c.question, c.answer))
    assert hindsight == set(range(T1)) - {1}  # the frame without the box is never a goal
    assert (REACHED_QUESTION, "yes") in seen and (REACHED_QUESTION, "no") in seen
    with pytest.raises(ValueError, match="unknown progress rule 'near'"):
        ClipSampler([s], window=2, rng=np.random.default_rng(0), progress_rule="near")
    with pytest.raises(ValueError, match="--progress-rule must be one of \\['pose', 'view'\\], got 'near'"):
        TrainConfig(progress_rule="near")
    # 3-element poses (recorded before the box position was kept) name the backfill command.
    old = Shard(s.task, s.frames, s.actions, s.qa_q, qa_a, s.seeds, goals, poses[..., :3], goal_poses[:, :3])
    with pytest.raises(ValueError, match="--backfill-poses"):
        ClipSampler([old], window=2, rng=np.random.default_rng(0), progress_share=1.0, progress_rule="view").sample()


def test_distance_bins_answer_and_expectation():
    from bagel_world.simulator.progress import DISTANCE_BINS, reached_probability

    bins = DISTANCE_BINS["navigate"]
    assert [bins.answer(d) for d in (0.0, 0.49, 0.5, 2.9, 100.0)] == ["0.25", "0.25", "0.75", "2.5", "7"]
    logp = np.full(len(bins.centres), -50.0)
    logp[3] = 0.0
    assert bins.expected(logp) == pytest.approx(1.75)
    assert bins.expected(np.zeros(len(bins.centres))) == pytest.approx(np.mean(bins.centres))
    assert reached_probability(np.log([[0.3, 0.1]]))[0] == pytest.approx(0.75)


def _tiny_trainer(tmp_path, window: int):
    """A one-step tiny checkpoint trained on fake shards, a plain fp32 trainer on it, and one
    sampled clip of `window` context frames plus the next."""
    from transformers import AutoTokenizer

    from bagel_world.training.pipeline import TASK_PROMPTS, _load_init
    from bagel_world.training.world import WorldTrainArgs, WorldTrainer

    _write_shards(tmp_path / "data")
    small = dict(ae_steps=2, world_steps=1, batch_size=2, holdout_episodes=1, hidden=32, layers=1, heads=2,
                 kv_heads=1, intermediate=64, vocab_size=300, window=window)
    ck = run_training(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "a"), work=str(tmp_path / "w"),
                                  **small), progress=False)
    init = _load_init(str(ck))
    tr = WorldTrainer(init.config, init.model, init.vae, AutoTokenizer.from_pretrained(str(ck)),
                      WorldTrainArgs(task_prompts=TASK_PROMPTS, bf16=False))
    clip = ClipSampler([Shard.load(list_shards(tmp_path / "data")[0])], window, np.random.default_rng(0)).sample()
    return tr, clip


def test_trainer_loss_runs_on_goal_clips(tmp_path):
    tr, clip = _tiny_trainer(tmp_path, window=2)
    plain = tr.plan(clip)
    clip.goal, clip.question, clip.answer = clip.frames[0], "How far away is the goal view?", "0.25"
    pl = tr.plan(clip)
    # The goal adds one clean latent block and one ViT block, after the last frame.
    assert len(pl.latent_frames) == len(plain.latent_frames) + 1 and pl.latent_frames[-1] == (len(clip.frames), False)
    assert pl.vit_frames[-1] == len(clip.frames)
    loss, parts = tr.loss([clip, clip], torch.Generator().manual_seed(0))
    assert np.isfinite(parts["mse"]) and parts["ce"] > 0 and torch.isfinite(loss)
    # A judge clip (one frame, the goal, the question) has no frame to predict: a batch of
    # them carries the answers' loss only, and beside full clips it adds no flow loss.
    lone = Clip(clip.task, clip.frames[-1:], [], clip.question, clip.answer, clip.key, goal=clip.goal)
    pl = tr.plan(lone)
    assert pl.latent_frames == [(0, False), (1, False)] and pl.vit_frames == [0, 1]
    loss, parts = tr.loss([lone, lone], torch.Generator().manual_seed(0))
    assert parts["mse"] == 0 and parts["ce"] > 0 and loss.item() == pytest.approx(0.25 * parts["ce"], rel=1e-5)
    tr.args.ce_weight = 1.0
    loss, parts = tr.loss([clip, lone], torch.Generator().manual_seed(0))
    assert parts["mse"] > 0 and loss.item() == pytest.approx(parts["mse"] + parts["ce"], rel=1e-5)


def test_length_buckets_split_only_where_padding_is_saved():
    from bagel_world.training.world import length_buckets

    # Many short question clips beside a few long clips: two groups, short first.
    assert length_buckets([60, 250, 61, 59, 240]) == [[0, 2, 3], [1, 4]]
    # Similar lengths, or one short clip among long ones, save too little padding to split.
    assert length_buckets([200, 250, 240]) == [[0, 1, 2]]
    assert length_buckets([60, 250, 250, 250, 250]) == [[0, 1, 2, 3, 4]]
    assert length_buckets([80]) == [[0]]


def test_bucketed_loss_equals_the_one_padded_forward(tmp_path):
    """Short one-frame question clips beside full clips run as two forwards; the loss, its
    parts and the gradient are those of one forward over the batch padded to its longest."""
    from dataclasses import replace

    from bagel_world.training import world

    tr, clip = _tiny_trainer(tmp_path, window=3)
    tr.args.ce_weight, tr.args.change_weight, tr.args.context_noise = 1.0, 2.0, 0.2
    clip.question, clip.answer = "How far are you from the green wall?", "3.5"
    lone = Clip(clip.task, clip.frames[-1:], [], clip.question, "1.0", clip.key)
    batch = [lone, clip, lone, lone, clip, lone]
    assert world.length_buckets([len(tr.plan(c).kinds) for c in batch]) == [[0, 2, 3, 5], [1, 4]]

    forwards = []
    one_forward = tr._forward

    def counted(b):
        forwards.append(len(b.plans))
        return one_forward(b)

    tr._forward = counted

    def run(batch, split: bool):
        tr.model.zero_grad(set_to_none=True)
        forwards.clear()
        if split:
            loss, parts = tr.loss(batch, torch.Generator().manual_seed(4))
        else:
            loss, parts = tr._forward(tr._batch(batch, torch.Generator().manual_seed(4)))
        loss.backward()
        return loss.item(), parts, {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}

    one, one_parts, one_grad = run(batch, False)
    assert forwards == [6]
    two, two_parts, two_grad = run(batch, True)
    assert forwards == [4, 2]  # the short clips, then the long ones
    assert two == pytest.approx(one, rel=1e-5) and one_parts["mse"] > 0 and one_parts["ce"] > 0
    for k in ("mse", "ce"):
        assert two_parts[k] == pytest.approx(one_parts[k], rel=1e-5), k
    # The split computes fewer token rows: only the real tokens are counted either way.
    assert two_parts["tokens"] == one_parts["tokens"]
    assert one_grad.keys() == two_grad.keys()
    for n, g in one_grad.items():
        torch.testing.assert_close(two_grad[n], g, rtol=1e-4, atol=1e-6, msg=n)
    # Without any answer in the batch, neither way touches the answer head: the optimiser
    # must not step parameters that had no gradient.
    silent = [replace(c, question=None, answer=None) for c in (clip, clip)]
    silent += [replace(lone, question=None, answer=None)] * 4
    _, one_parts, one_grad = run(silent, False)
    _, two_parts, two_grad = run(silent, True)
    assert forwards == [4, 2] and one_parts["ce"] == two_parts["ce"] == 0
    assert one_grad.keys() == two_grad.keys()
    assert not any(n.startswith("language_model.lm_head") for n in two_grad)


def test_frame_flow_errors_compare_clips_under_the_same_draws(tmp_path):
    from dataclasses import replace

    from bagel_world.training.world import WorldTrainer

    tr, clip = _tiny_trainer(tmp_path, window=3)
    tr.model.eval()
    other = replace(clip, actions=clip.actions[:-1] + ["turn right 30 degrees" if clip.actions[-1] != "turn right 30 degrees"
                                                       else "move forward 0.5 m"])
    err = tr.frame_flow_errors([clip, other, clip], t=0.8, seed=3)
    assert err.shape == (3, 2) and np.all(err > 0)
    # The same clip gets the same draws wherever it sits in the batch; another last action
    # changes only the last frame's error (earlier frames cannot see it).
    np.testing.assert_allclose(err[0], err[2], rtol=1e-5)
    assert err[1, 0] == pytest.approx(err[0, 0], rel=1e-5) and err[1, 1] != err[0, 1]
    # Every predicted frame is noised to the asked timestep.
    assert tr.frame_flow_errors([clip], t=0.2, seed=3)[0, 1] != pytest.approx(err[0, 1], rel=1e-5)
    with pytest.raises(ValueError, match="t must be in"):
        tr.frame_flow_errors([clip], t=0.0)
    with pytest.raises(ValueError, match="one length"):
        tr.frame_flow_errors([clip, replace(clip, frames=clip.frames[:2], actions=clip.actions[:1])], t=0.5)
    with pytest.raises(ValueError, match=r"randomises them \(\{'action_dropout': 0.1\}\)"):
        WorldTrainer(tr.config, tr.model, tr.vae, tr.tok, replace(tr.args, action_dropout=0.1)).frame_flow_errors(
            [clip], t=0.5)
