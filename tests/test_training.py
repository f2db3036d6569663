"""The training pipeline end to end on a few synthetic trajectories (seconds, not hours)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bagel_world.training.data import ClipSampler, Shard, list_shards
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


def test_debias_ema_recovers_the_average_of_the_trained_weights():
    from bagel_world.training.world import debias_ema

    init = {"w": torch.randn(5)}
    thetas = [torch.randn(5) for _ in range(30)]
    d, ema = 0.9, init["w"].clone()
    for th in thetas:
        ema = d * ema + (1 - d) * th
    avg = sum((1 - d) * d ** (len(thetas) - 1 - k) * th for k, th in enumerate(thetas)) / (1 - d ** len(thetas))
    torch.testing.assert_close(debias_ema({"w": ema}, init, d, len(thetas))["w"], avg)
