"""`bagel-world train --distributed`: FSDP2 over gloo on this CPU, two ranks against one.

Two processes on a split global batch must give the losses of one process on the whole
batch (the single-process reference of the distributed recipe); the DCP state resumes
exactly, activation checkpointing changes nothing, and the export loads as a checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from test_training import _write_shards

from bagel_world.training.config import TrainConfig
from bagel_world.training.data import ClipSampler, Shard, list_shards

SMALL = dict(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, vocab_size=300, window=3)
STEPS, BATCH = 3, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(root: Path, checkpoint_layers: bool = False):
    """The same tiny model, autoencoder and tokenizer on every rank (seeded)."""
    from transformers import AutoTokenizer

    from bagel_world.model.autoencoder import AutoEncoder
    from bagel_world.model.bagel import Bagel
    from bagel_world.model.checkpoint_io import init_random
    from bagel_world.training.distributed import ShardedWorldTrainer
    from bagel_world.training.pipeline import TASK_PROMPTS, copy_und_to_gen, small_config
    from bagel_world.training.world import WorldTrainArgs

    tok = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    config = small_config(TrainConfig(**SMALL), int(np.ceil(len(tok) / 64) * 64), (64, 64))
    torch.manual_seed(0)
    vae = AutoEncoder(config.vae)
    model = Bagel(config)
    init_random(model, 0)
    copy_und_to_gen(model)
    model.language_model.checkpoint_layers = checkpoint_layers
    args = WorldTrainArgs(steps=STEPS, batch_size=BATCH, warmup=1, bf16=False, task_prompts=TASK_PROMPTS,
                          action_dropout=0.3, context_noise=0.2, rope_gap=64, change_weight=2.0)
    return ShardedWorldTrainer(config, model, vae, tok, args)


def _batches(root: Path) -> list:
    """STEPS global batches; in the last, the second half asks no question (as counterfactual
    groups do), so one of two ranks has no answer tokens: lm_head still gets its gradient."""
    sampler = ClipSampler([Shard.load(p) for p in list_shards(root / "data")], 3, np.random.default_rng(0))
    batches = [sampler.sample_batch(BATCH) for _ in range(STEPS)]
    for clip in batches[-1][BATCH // 2 :]:
        clip.question = clip.answer = None
    return batches


def _rank(rank: int, world: int, port: int, root: Path) -> None:
    """One rank: STEPS steps on its share of each global batch; with two ranks also the same
    with activation checkpointing, and step 3 again from the DCP state saved after step 2."""
    from bagel_world.training.distributed import torchrun_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    batches = _batches(root)
    k = BATCH // world
    out: dict = {}
    with torchrun_group("cpu"):
        for name, ac in [("plain", False)] + ([("checkpointed", True)] if world > 1 else []):
            tr = _trainer(root, checkpoint_layers=ac)
            rng = np.random.default_rng(7 + rank)
            out[name], out[name + "_grad_norm"] = [], []
            for step, batch in enumerate(batches):
                parts = tr.train_step(batch[rank * k : (rank + 1) * k], None)
                out[name].append(parts["loss"])
                out[name + "_grad_norm"].append(parts["grad_norm"])
                if step == 1 and name == "plain" and world > 1:
                    tr.save(root / f"work{world}", rng, None)
                    rng.random()  # moves on; resuming must bring back the saved state
            if name == "plain":
                ema = tr.full_ema()
        if world > 1:
            tr = _trainer(root)
            rng = np.random.default_rng(0)
            assert tr.resume(root / f"work{world}", rng, None) and tr.step == 2
            assert rng.bit_generator.state == np.random.default_rng(7 + rank).bit_generator.state
            out["resumed"] = tr.train_step(batches[2][rank * k : (rank + 1) * k], None)["loss"]
        if rank == 0:
            (root / f"losses{world}.json").write_text(json.dumps(out))
            torch.save(ema, root / f"ema{world}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The ranks of a two-process and of a one-process group, on the same global batches."""
    from bagel_world.model.checkpoint_io import build_tokenizer
    from bagel_world.training.pipeline import _texts

    root = tmp_path_factory.mktemp("dist")
    _write_shards(root / "data")
    build_tokenizer(root / "tokenizer", texts=_texts([Shard.load(list_shards(root / "data")[0])]), vocab_size=300)
    for world in (2, 1):
        mp.spawn(_rank, args=(world, _free_port(), root), nprocs=world, join=True)
    return root


def test_two_ranks_give_the_losses_and_weights_of_one_on_the_same_global_batch(runs):
    one, two = (json.loads((runs / f"losses{w}.json").read_text()) for w in (1, 2))
    assert len(two["plain"]) == STEPS and len(set(two["plain"])) == STEPS  # the steps differ...
    np.testing.assert_allclose(two["plain"], one["plain"], rtol=1e-5)  # ...and the split does not
    # The gradient itself, not only its direction (which is all Adam's steps would show).
    np.testing.assert_allclose(two["plain_grad_norm"], one["plain_grad_norm"], rtol=1e-5)
    ema1, ema2 = torch.load(runs / "ema1.pt"), torch.load(runs / "ema2.pt")
    assert ema1.keys() == ema2.keys()
    for k in ema1:
        torch.testing.assert_close(ema2[k], ema1[k], rtol=1e-4, atol=1e-6, msg=k)


def test_activation_checkpointing_and_a_resumed_state_change_no_loss(runs):
    got = json.loads((runs / "losses2.json").read_text())
    assert got["checkpointed"] == got["plain"]  # the same values, recomputed
    assert got["resumed"] == got["plain"][2]  # the DCP state is the state, to the bit


@pytest.mark.slow  # two torchrun launches of two processes: 30-50 s on 2 CPU cores
def test_torchrun_trains_resumes_and_exports_a_loadable_checkpoint(tmp_path):
    from bagel_world.inference.load import load_bagel

    _write_shards(tmp_path / "data")
    small = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "bagel_world.cli", "train", "--distributed", "--activation-checkpointing", f"--data={tmp_path / 'data'}",
           f"--out={tmp_path / 'ckpt'}", f"--work={tmp_path / 'work'}", "--ae-steps=2", "--batch-size=4",
           "--holdout-episodes=1", "--no-bf16", *small]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps in (2, 3):  # the second run resumes the first's DCP state
        done = subprocess.run([*cmd, f"--steps={steps}"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "work" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3]
    assert (tmp_path / "work" / "dist_state" / "latest").read_text() == "step-0000003"
    meta = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert meta["step"] == 3 and meta["world_size"] == 2 and meta["train_config"]["distributed"]
    eng = load_bagel(tmp_path / "ckpt", device="cpu", dtype=torch.float32)  # strict: every weight in place
    assert eng.config.llm.num_hidden_layers == 2


def test_distributed_without_torchrun_says_how_to_launch(tmp_path, monkeypatch, capsys):
    from bagel_world.cli import main

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert main(["train", "--distributed", f"--data={tmp_path}", f"--out={tmp_path / 'ckpt'}"]) == 2
    err = capsys.readouterr().err
    assert "RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing" in err
    assert "torchrun --nproc-per-node N -m bagel_world.cli train ... --distributed" in err


def test_each_rank_samples_its_own_episodes_and_its_share_of_the_groups(tmp_path):
    from bagel_world.training.data import Branches, BranchSampler

    frames = _write_shards(tmp_path)
    shard = Shard.load(list_shards(tmp_path)[0])
    samplers = [ClipSampler([shard], 3, np.random.default_rng(r), part=(r, 2)) for r in range(2)]
    episodes = [{c.key[1] for c in s.sample_batch(40)} for s in samplers]
    assert episodes == [{0, 2, 4}, {1, 3, 5}]
    N, K = 4, 5
    b = Branches("navigate", frames[:N, :2].copy(), np.full((N, 1), "turn left 30 degrees"), frames[:N, :K].copy(),
                 np.array([f"action {k}" for k in range(K)]), np.arange(N), np.ones(N, np.int64))
    # One process draws one group of 4 in a batch of 8; over two ranks of 4 clips, rank 0 draws it.
    groups = [BranchSampler(s, [b], branch_share=0.5, group=4) for s in samplers]
    assert [sum(c.key[0] < 0 for c in g.sample_batch(4)) for g in groups] == [4, 0]
    with pytest.raises(ValueError, match="does not fit a batch of 2 clips per rank"):
        BranchSampler(ClipSampler([shard], 3, np.random.default_rng(0), part=(0, 4)), [b], 0.5, 4).sample_batch(2)
