"""`bagel-world train --distributed`: the world model on every rank of a torchrun group.

    torchrun --nproc-per-node N -m bagel_world.cli train ... --distributed

- Sharding: FSDP2 `fully_shard` on each decoder layer and each SigLIP encoder layer, then on
  the whole model. The frozen autoencoder is not sharded: every rank holds it.
- Data: rank r samples every N-th episode from position r, with its own sampler seed
  (seed + r), and takes batch_size / N clips per step.
- The same losses as one process on the same global batch: each clip draws its randomness
  from a generator seeded by (seed, step, global clip index), so its noise does not depend
  on how the batch is split, and each rank divides its sums of the flow and answer losses by
  the global batch's totals (all-reduced). The ranks' losses then add up to the global mean;
  a rank backpropagates N times its share, so FSDP's gradient average is the gradient of
  that mean. A one-rank run is the single-process reference of this recipe (its noise comes
  from per-clip generators, so it differs from `bagel-world train` without --distributed).
- EMA: kept sharded, beside each rank's parameter shard (the same update, no communication;
  at 7B no rank holds a second full copy), and gathered to rank 0 only to export.
- Resumable state: torch.distributed.checkpoint (DCP) of the model, optimiser and EMA
  shards, plus each rank's sampler state and the step, in WORK/dist_state/step-S/; the file
  WORK/dist_state/latest names the last complete one and is resumed automatically (with
  the same number of ranks). With several machines, WORK must be a shared folder.
- Export: rank 0 writes the same official layout as one process (`export_checkpoint`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from bagel_world.config import BagelConfig
from bagel_world.model.autoencoder import AutoEncoder
from bagel_world.model.bagel import Bagel
from bagel_world.training.data import Clip
from bagel_world.training.world import WorldTrainArgs, WorldTrainer

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def torchrun_group(device: str | None) -> Iterator[torch.device]:
    """Join the torchrun group (gloo on CPU, nccl on CUDA) and yield this rank's device; on
    leaving, wait for every rank (the export is then on disk) and leave the group again.

    A CUDA device without an index becomes cuda:LOCAL_RANK, one GPU per process.
    """
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing); "
                           "launch with `torchrun --nproc-per-node N -m bagel_world.cli train ... --distributed`")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if dev.index is None else dev
        torch.cuda.set_device(dev)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield dev
        dist.barrier()
    finally:
        if joined:
            dist.destroy_process_group()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block (tokenizer and autoencoder, written to the work folder) before the
    other ranks run it and find them there. The wait can last the autoencoder's training, so
    it uses its own gloo group with a long timeout, not the training group's."""
    group = dist.new_group(backend="gloo", timeout=timedelta(days=1))
    if dist.get_rank() != 0:
        dist.barrier(group=group)
    yield
    if dist.get_rank() == 0:
        dist.barrier(group=group)
    dist.destroy_process_group(group)


class _Root(nn.Module):
    """FSDP's root over the whole model. Bagel has no forward (training calls its embedders,
    LLM and heads one by one), so the training forward runs as this module's forward: the
    root's own parameters are gathered once around it and their gradients reduced once."""

    def __init__(self, model: Bagel):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(*args)


def shard_model(model: Bagel) -> _Root:
    """fully_shard each decoder layer and SigLIP encoder layer, then the whole model."""
    # A decoder layer also returns its keys and values (views, for the inference cache); training
    # drops them and nothing writes to them in place, the case FSDP2 warns of.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPQwen2MoTDecoderLayer\) returned a view")
    for layer in model.language_model.model.layers:
        fully_shard(layer)
    for layer in model.vit_model.vision_model.encoder.layers:
        fully_shard(layer)
    return fully_shard(_Root(model))


def clip_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The generator of the global batch's clip `index` at `step`, whatever the world size."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class ShardedWorldTrainer(WorldTrainer):
    """A WorldTrainer on one rank: the model FSDP2-sharded, the optimiser and the EMA on this
    rank's shards; `train_step` takes this rank's share of the global batch."""

    def __init__(self, config: BagelConfig, model: Bagel, vae: AutoEncoder, tokenizer, args: WorldTrainArgs):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if args.batch_size % self.world:
            raise ValueError(f"--batch-size {args.batch_size} does not split over {self.world} ranks; "
                             f"use a multiple of {self.world}")
        self.root = shard_model(model)
        super().__init__(config, model, vae, tokenizer, args)  # optimiser and EMA over the shards

    def loss(self, clips: list[Clip], gen=None) -> tuple[Tensor, dict]:
        """This rank's share of the global batch's loss, times the world size (for FSDP's
        gradient average); the parts are the global batch's. Clip i of this rank is clip
        rank * len(clips) + i of the global batch, and draws from its own generator (`gen`,
        the single-process generator, is not used)."""
        device = self.model.vae2llm.weight.device  # nccl reduces CUDA tensors only
        first = self.rank * len(clips)
        b = self._batch(clips, [clip_generator(self.args.seed, self.step, first + i) for i in range(len(clips))])
        own = b.own_totals()
        totals = torch.tensor([own["w"], own["ce"]], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        b.totals = dict(zip(("w", "ce"), totals.tolist()))
        total, parts = self.root(self._forward, b)
        keys = ("loss", "mse", "ce", "tokens")
        summed = torch.tensor([parts[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(summed)
        parts = dict(zip(keys, summed.tolist()))
        parts["tokens"] = int(parts["tokens"])
        return total * self.world, parts

    # ---- resumable state (DCP) -----------------------------------------------------------
    def save(self, folder: Path, sampler_rng: np.random.Generator, gen: torch.Generator) -> None:
        """Every rank writes its shards and its sampler state into dist_state/step-S/; then
        rank 0 points dist_state/latest at it and removes the older states."""
        root = folder / "dist_state"
        d = root / f"step-{self.step:07d}"
        if self.is_main and d.exists():
            shutil.rmtree(d)
        dist.barrier()
        model_sd, opt_sd = get_state_dict(self.model, self.opt)
        dcp.save({"model": model_sd, "opt": opt_sd, "ema": self.ema}, checkpoint_id=d)
        torch.save({"step": self.step, "world": self.world, "np_rng": sampler_rng.bit_generator.state,
                    "history": self.history}, d / f"rank{self.rank}.pt")
        dist.barrier()
        if self.is_main:
            (root / "latest.tmp").write_text(d.name)
            (root / "latest.tmp").replace(root / "latest")
            for old in root.glob("step-*"):
                if old != d:
                    shutil.rmtree(old)
        dist.barrier()

    def resume(self, folder: Path, sampler_rng: np.random.Generator, gen: torch.Generator) -> bool:
        """Load the state dist_state/latest names, if any (written by as many ranks); True if it did."""
        latest = folder / "dist_state" / "latest"
        if not latest.is_file():
            if (folder / "train_state.pt").is_file():
                raise RuntimeError(f"{folder} holds a single-process train_state.pt, which --distributed does not "
                                   "resume; run without --distributed, or train elsewhere (--work)")
            return False
        d = latest.parent / latest.read_text().strip()
        written = torch.load(d / "rank0.pt")["world"]
        if written != self.world:
            raise RuntimeError(f"{d} was written by {written} ranks; resume it with --nproc-per-node {written}")
        mine = torch.load(d / f"rank{self.rank}.pt")
        model_sd, opt_sd = get_state_dict(self.model, self.opt)
        state = {"model": model_sd, "opt": opt_sd, "ema": self.ema}
        dcp.load(state, checkpoint_id=d)  # in place, into this rank's shards
        set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["opt"])
        self.step, self.history = mine["step"], mine["history"]
        sampler_rng.bit_generator.state = mine["np_rng"]
        return True

    def full_ema(self) -> dict[str, Tensor] | None:
        """Gathered one tensor at a time (every rank takes part), kept on rank 0 only."""
        out = {}
        for k, v in self.ema.items():
            full = v.full_tensor() if isinstance(v, DTensor) else v
            if self.is_main:
                out[k] = full.cpu()
        return out if self.is_main else None
