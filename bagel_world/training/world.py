"""Train a small BAGEL MoT world model on recorded trajectories (the official objective).

One training sequence per clip, laid out as the local simulator lays out its context:

  [task text] [f0 VAE][f0 ViT] [a0] [f1 noised][f1 VAE][f1 ViT] [a1] ... [fk noised][fk VAE][fk ViT] [q] [answer]

with, for a goal-conditioned progress question, the goal image ([goal VAE][goal ViT]) between
the last frame and [q].

Noised latent blocks carry the flow-matching loss (v = eps - x0, one logit-normal t per
block) and are invisible to every other split; they share the rope position of the clean
copy that follows (the layout of upstream `data/interleave_datasets/` samples). The answer segment carries the cross-entropy loss.
Total = mse_weight * MSE + ce_weight * CE, AdamW, EMA of the weights, bf16 autocast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bagel_world.config import BagelConfig
from bagel_world.inference.sampler import shift_timesteps
from bagel_world.inference.transforms import flattened_position_ids, patchify, to_tensor
from bagel_world.model.autoencoder import AutoEncoder, latent_to_tokens
from bagel_world.model.bagel import Bagel
from bagel_world.model.packing import batch_masks
from bagel_world.model.tokens import special_token_ids
from bagel_world.training.config import DEFAULT_WORLD_STEPS
from bagel_world.training.data import Clip, ClipSampler

log = logging.getLogger(__name__)


@dataclass
class WorldTrainArgs:
    steps: int = DEFAULT_WORLD_STEPS
    batch_size: int = 8
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mse_weight: float = 1.0
    ce_weight: float = 0.25
    timestep_shift: float = 1.0
    # Levers for a model that obeys its actions and stays stable over long rollouts:
    action_dropout: float = 0.0  # share of actions left out (the text-free context), for cfg_text_scale > 1
    context_noise: float = 0.0  # max noise level t of clean context latents, told by the timestep embedding
    rope_gap: int = 0  # max random rope offset after the task text (a sliding window skips dropped frames)
    change_weight: float = 0.0  # extra flow-loss weight on latent tokens that change from the previous frame
    seed: int = 0
    bf16: bool = True
    log_every: int = 50
    ckpt_every: int = 500
    task_prompts: dict[str, str] = field(default_factory=dict)  # task -> the text heading each sequence


# ---- sequence layout ---------------------------------------------------------------------
@dataclass
class _Plan:
    """Token layout of one training sequence; embeddings are filled in the batched forward."""

    split_lens: list[int] = field(default_factory=list)
    split_modes: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)  # 0 text, 1 vit, 2 clean latent, 3 noised latent
    text_ids: list[int] = field(default_factory=list)  # for kind 0, in order
    vit_frames: list[int] = field(default_factory=list)  # frame index per ViT block
    latent_frames: list[tuple[int, bool]] = field(default_factory=list)  # (frame, noised) per latent block
    ce_targets: list[tuple[int, int]] = field(default_factory=list)  # (position in sequence, target id)
    rope: int = 0

    def add_text(self, ids: list[int], bos: int, eos: int, loss: bool = False) -> None:
        seq = [bos, *ids, eos]
        start = len(self.kinds)
        self._split(len(seq), "causal", list(range(self.rope, self.rope + len(seq))), [0] * len(seq))
        self.text_ids += seq
        if loss:  # [bos, t1..tn] predicts [t1..tn, eos]
            self.ce_targets += [(start + i, seq[i + 1]) for i in range(len(seq) - 1)]
        self.rope += len(seq)

    def add_image(self, kind: int, n: int, soi: int, eoi: int, frame: int) -> None:
        mode = "noise" if kind == 3 else "full"
        self._split(n + 2, mode, [self.rope] * (n + 2), [0] + [kind] * n + [0])
        self.text_ids += [soi, eoi]  # markers are text embeddings, in order of appearance
        if kind == 1:
            self.vit_frames.append(frame)
        else:
            self.latent_frames.append((frame, kind == 3))
        if kind != 3:  # noised blocks do not advance the rope
            self.rope += 1

    def _split(self, n, mode, pos, kinds):
        self.split_lens.append(n)
        self.split_modes.append(mode)
        self.positions += pos
        self.kinds += kinds


@dataclass
class _Batch:
    """A batch ready for the model: layout, latents and every random draw already made."""

    clips: list[Clip]
    plans: list[_Plan]
    kinds: Tensor  # (B, L) token kinds, -1 for padding
    pos: Tensor  # (B, L) rope positions
    clean: dict[str, Tensor]
    noised: dict | None
    eps: Tensor | None  # the flow noise of the noised tokens
    totals: dict[str, float] | None = None  # global sums of flow weights "w" and answer tokens "ce"

    def own_totals(self) -> dict[str, float]:
        """This batch's own sums of flow weights "w" and answer tokens "ce" (what `totals` holds
        once they are summed over every part of the global batch)."""
        return {"w": 0.0 if self.noised is None else float(self.noised["w"].sum()),
                "ce": float(sum(len(pl.ce_targets) for pl in self.plans))}


class WorldTrainer:
    """Owns the model, its EMA, the optimiser and the frozen autoencoder.

    One process trains on the whole batch; `ShardedWorldTrainer` (training/distributed.py)
    is one rank of a torchrun group, on its share of the batch.
    """

    rank, world = 0, 1

    def __init__(self, config: BagelConfig, model: Bagel, vae: AutoEncoder, tokenizer, args: WorldTrainArgs):
        self.config, self.model, self.vae, self.tok, self.args = config, model, vae.eval(), tokenizer, args
        for p in self.vae.parameters():
            p.requires_grad_(False)
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.trainable, lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                     weight_decay=args.weight_decay)
        self.ids = special_token_ids(tokenizer)
        self.step = 0
        self.history: list[dict] = []

    @property
    def is_main(self) -> bool:
        """The rank that logs and exports."""
        return self.rank == 0

    @property
    def local_batch(self) -> int:
        """Clips per train_step on this rank."""
        return self.args.batch_size // self.world

    # ---- batch construction ------------------------------------------------------------
    def plan(self, clip: Clip, gen: torch.Generator | None = None) -> _Plan:
        """The layout of one clip; with `gen`, the random rope gap and action dropout are drawn."""
        cfg, ids, a = self.config, self.ids, self.args

        def draw() -> float:
            return float(torch.rand((), generator=gen)) if gen is not None else 1.0
        H, W = clip.frames.shape[1:3]
        n_lat = (H // cfg.latent_downsample) * (W // cfg.latent_downsample)
        p = cfg.vit.patch_size
        n_vit = (H // p) * (W // p)
        pl = _Plan()
        head = self.args.task_prompts.get(clip.task, clip.task)
        pl.add_text(self.tok.encode(head, add_special_tokens=False), ids["bos"], ids["eos"])
        if a.rope_gap > 0 and draw() < 0.5:
            # The local simulator slides its window by dropping the oldest frame's cache
            # entries, so later frames sit further from the task text than in a fresh context.
            pl.rope += int(draw() * a.rope_gap)
        for f in range(len(clip.frames)):
            if f > 0:
                # A dropped action leaves the frame to be predicted from the history alone:
                # the text-free context that text guidance contrasts with.
                if not (a.action_dropout > 0 and draw() < a.action_dropout):
                    pl.add_text(self.tok.encode(clip.actions[f - 1], add_special_tokens=False), ids["bos"], ids["eos"])
                pl.add_image(3, n_lat, ids["start_of_image"], ids["end_of_image"], f)
            pl.add_image(2, n_lat, ids["start_of_image"], ids["end_of_image"], f)
            pl.add_image(1, n_vit, ids["start_of_image"], ids["end_of_image"], f)
        if clip.goal is not None:  # the goal image a progress question asks about, clean as a frame
            pl.add_image(2, n_lat, ids["start_of_image"], ids["end_of_image"], len(clip.frames))
            pl.add_image(1, n_vit, ids["start_of_image"], ids["end_of_image"], len(clip.frames))
        if clip.question is not None:
            pl.add_text(self.tok.encode(clip.question, add_special_tokens=False), ids["bos"], ids["eos"])
            pl.add_text(self.tok.encode(clip.answer, add_special_tokens=False), ids["bos"], ids["eos"], loss=True)
        return pl

    def loss(self, clips: list[Clip], gen: torch.Generator | list[torch.Generator]) -> tuple[Tensor, dict]:
        """Forward one batch of clips; returns total loss and its parts.

        A batch that mixes short clips (one-frame questions) with long ones runs as two
        padded forwards, short and long (`length_buckets`), instead of padding every clip
        to the longest. Both losses are sums over the whole batch's totals, so they add up
        to the one-forward loss: same value, same gradient, less padding computed.
        """
        b = self._batch(clips, gen)
        buckets = length_buckets([len(p.kinds) for p in b.plans])
        if len(buckets) == 1:
            return self._forward(b)
        b.totals = b.own_totals()
        total, parts = None, {"loss": 0.0, "mse": 0.0, "ce": 0.0, "tokens": 0}
        for rows in buckets:
            t, p = self._forward(_sub_batch(b, rows))
            total = t if total is None else total + t
            parts = {k: parts[k] + p[k] for k in parts}
        return total, parts

    def _batch(self, clips: list[Clip], gen: torch.Generator | list[torch.Generator]) -> _Batch:
        """The batch's layout, latents and noise: every random draw, and no trainable weight yet.

        A linear recipe; every random draw comes from `gen`, in this order (so a resumed run
        draws what an uninterrupted one would): the plans, the autoencoder's posterior sample,
        each latent frame's timestep or context noise, then the flow noise. `gen` may also be
        one generator per clip, each drawing its clip's share in that order: a clip's noise then
        does not depend on the batch it sits in (distributed training splits the batch).
        """
        device = self.model.vae2llm.weight.device
        gens = gen if isinstance(gen, list) else [gen] * len(clips)
        plans = [self.plan(c, g) for c, g in zip(clips, gens)]
        kinds, pos = self._batch_layout(plans)
        clean, noised = self._latent_tokens(plans, clips, gen, device)
        eps = None
        if noised is not None:
            if isinstance(gen, list):
                eps = torch.cat([torch.randn(n, noised["x0"].shape[1], generator=g)
                                 for n, g in zip(noised["per_clip"], gens)])
            else:
                eps = torch.randn(noised["x0"].shape, generator=gen)
            eps = eps.to(device)
        return _Batch(clips, plans, kinds, pos, clean, noised, eps)

    def _forward(self, b: _Batch) -> tuple[Tensor, dict]:
        """The model over a prepared batch: the flow-matching MSE and the answers' CE.

        With `b.totals` (distributed training) both are this rank's sums over the global
        batch's totals, so the ranks' losses add up to the mean over the global batch.
        """
        device = self.model.vae2llm.weight.device
        hidden, noised_rows = self._hidden(b)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            mse = torch.zeros((), device=device)
            if b.noised is not None:
                w = b.noised["w"]  # (N,) per-token weights, mean ~1 per frame
                sq = self._flow_sq_error(hidden, noised_rows, b)
                if b.totals is None:
                    mse = (w[:, None] * sq).mean() / w.mean()
                else:
                    mse = (w[:, None] * sq).sum() / (sq.shape[1] * b.totals["w"])
            ce = self._answer_ce(hidden, b.plans, device, None if b.totals is None else b.totals["ce"])
        total = self.args.mse_weight * mse + self.args.ce_weight * ce
        return total, {"loss": total.item(), "mse": mse.item(), "ce": ce.item(),
                       "tokens": int(sum(len(p.kinds) for p in b.plans))}

    @torch.no_grad()
    def frame_flow_errors(self, clips: list[Clip], t: float, seed: int = 0) -> np.ndarray:
        """(B, F-1) flow-matching squared error (mean over tokens and channels, unweighted) of
        each clip's predicted frames, every one noised to timestep `t`, with the same random
        draws for every clip: clips that differ only in an action or an outcome differ only
        in that. For probes such as "which action's text explains this outcome best"; build
        the trainer with `WorldTrainArgs` whose augmentations are off (its defaults)."""
        if not 0.0 < t <= 1.0:
            raise ValueError(f"t must be in (0, 1], got {t}")
        a = self.args
        augmented = {k: v for k, v in (("action_dropout", a.action_dropout), ("context_noise", a.context_noise),
                                       ("rope_gap", a.rope_gap)) if v}
        if augmented:
            raise ValueError(f"frame_flow_errors compares clips as they are; this trainer randomises them ({augmented}); "
                             f"use WorldTrainArgs with these at 0")
        lengths = {len(c.frames) for c in clips}
        if len(lengths) != 1 or lengths == {1}:
            raise ValueError(f"need clips of one length with at least 2 frames, got lengths {sorted(lengths)}")
        b = self._batch(clips, [torch.Generator().manual_seed(seed) for _ in clips])
        assert b.noised is not None
        b.noised["t"] = torch.full_like(b.noised["t"], t)
        device = self.model.vae2llm.weight.device
        hidden, noised_rows = self._hidden(b)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            err = self._flow_sq_error(hidden, noised_rows, b).mean(-1)
        return err.float().cpu().numpy().reshape(len(clips), lengths.pop() - 1, -1).mean(-1)

    def _flow_sq_error(self, hidden: Tensor, noised_rows: Tensor, b: _Batch) -> Tensor:
        """(N, C) squared error of the predicted velocity against the flow target eps - x0."""
        v = self.model.llm2vae(hidden[noised_rows[:, 0], noised_rows[:, 1]]).float()
        return (v - (b.eps - b.noised["x0"])) ** 2

    def _hidden(self, b: _Batch) -> tuple[Tensor, Tensor]:
        """The LLM's last hidden states (B, L, H) over a prepared batch, and the (N, 2) rows of
        its noised latent tokens. The embeddings run in fp32, the LLM under bf16 autocast
        where `args.bf16` asks for it."""
        model, plans, kinds, pos = self.model, b.plans, b.kinds, b.pos
        device = model.vae2llm.weight.device
        x = torch.zeros(*kinds.shape, self.config.llm.hidden_size, device=device)
        # 1. Text and marker embeddings.
        text_rows = (kinds == 0).nonzero()
        text_ids = torch.tensor([i for pl in plans for i in pl.text_ids])
        x[text_rows[:, 0], text_rows[:, 1]] = model.embed_text(text_ids.to(device)).float()
        # 2. ViT tokens (trainable SigLIP), one packed call for all frames of the batch.
        vit_rows = (kinds == 1).nonzero()
        x[vit_rows[:, 0], vit_rows[:, 1]] = self._vit_embeddings(plans, b.clips, device)
        # 3. Latent tokens from the frozen autoencoder: clean context (t = 0, or lightly noised
        #    and told so) and the noised frames to predict (x_t; these carry the flow loss).
        clean, noised = b.clean, b.noised
        clean_rows, noised_rows = (kinds == 2).nonzero(), (kinds == 3).nonzero()
        if clean["x"].numel():
            x[clean_rows[:, 0], clean_rows[:, 1]] = model.embed_latents(
                clean["x"].to(device), clean["t"].to(device), clean["pos"].to(device)).float()
        if noised is not None:
            t = noised["t"][:, None]
            xt = (1 - t) * noised["x0"] + t * b.eps
            x[noised_rows[:, 0], noised_rows[:, 1]] = model.embed_latents(xt, noised["t"], noised["pos"]).float()
        # 4. The LLM over the packed batch.
        mask = batch_masks([(pl.split_lens, pl.split_modes) for pl in plans], device=device)
        gen_mask = (kinds == 2) | (kinds == 3)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            hidden = model.language_model(x.to(model.dtype), pos.to(device), gen_mask.to(device), mask, None).hidden
        return hidden, noised_rows

    @staticmethod
    def _batch_layout(plans: list[_Plan]) -> tuple[Tensor, Tensor]:
        """(B, L) token kinds (-1: padding) and rope positions of the padded batch."""
        B, L = len(plans), max(len(p.kinds) for p in plans)
        kinds = torch.full((B, L), -1, dtype=torch.long)
        pos = torch.zeros(B, L, dtype=torch.long)
        for b, pl in enumerate(plans):
            kinds[b, : len(pl.kinds)] = torch.tensor(pl.kinds)
            pos[b, : len(pl.positions)] = torch.tensor(pl.positions)
        return kinds, pos

    def _vit_embeddings(self, plans: list[_Plan], clips: list[Clip], device: torch.device) -> Tensor:
        cfg = self.config
        patches, vpos, lens = [], [], []
        for pl, clip in zip(plans, clips):
            for f in pl.vit_frames:
                img = to_tensor_uint8(clip.images[f])
                pp = cfg.vit.patch_size
                patches.append(patchify(img, pp))
                vpos.append(flattened_position_ids(img.shape[1] // pp, img.shape[2] // pp, cfg.vit_max_num_patch_per_side))
                lens.append(patches[-1].shape[0])
        cu = torch.tensor([0] + list(np.cumsum(lens)), dtype=torch.int32, device=device)
        return self.model.embed_vit(torch.cat(patches).to(device), torch.cat(vpos).to(device), cu).float()

    def _latent_tokens(self, plans: list[_Plan], clips: list[Clip], gen: torch.Generator | list[torch.Generator],
                       device: torch.device) -> tuple[dict[str, Tensor], dict | None]:
        """Clean context tokens {x, t, pos} and noised target tokens {x0, t, pos, w, per_clip}
        (None if none; per_clip: how many of them each clip has)."""
        cfg, a = self.config, self.args
        gens = gen if isinstance(gen, list) else [gen] * len(clips)
        with torch.no_grad():
            frames = [torch.stack([to_tensor_uint8(f) for f in clip.images]) for clip in clips]
            if isinstance(gen, list):  # posterior samples, each clip's from its own generator
                z = torch.cat([self.vae.encode(f.to(device), generator=g) for f, g in zip(frames, gens)])
            else:
                z = self.vae.encode(torch.cat(frames).to(device), generator=gen)  # posterior sample
        x_c, t_c, pos_c, x0_n, t_n, pos_n, w_n, per_clip = [], [], [], [], [], [], [], []
        for pl, zc, g in zip(plans, torch.split(z, [len(c.images) for c in clips]), gens):
            per_clip.append(0)
            h, w = zc.shape[2] // cfg.latent_patch_size, zc.shape[3] // cfg.latent_patch_size
            lp = flattened_position_ids(h, w, cfg.max_latent_size)
            for f, noised in pl.latent_frames:
                tok = latent_to_tokens(zc[f], cfg.latent_patch_size)
                if noised:
                    t = shift_timesteps(torch.sigmoid(torch.randn((), generator=g)), a.timestep_shift)
                    per_clip[-1] += tok.shape[0]
                    x0_n.append(tok)
                    t_n.append(t.expand(tok.shape[0]))
                    pos_n.append(lp)
                    w_n.append(self._change_weights(tok, latent_to_tokens(zc[f - 1], cfg.latent_patch_size)))
                else:
                    # Context-noise augmentation (GameNGen, DIAMOND): half of the context
                    # frames are partly noised, and the model is told how much.
                    tc = a.context_noise * float(torch.rand((), generator=g))
                    if a.context_noise <= 0 or float(torch.rand((), generator=g)) < 0.5:
                        tc = 0.0
                    noise = torch.randn(tok.shape, generator=g).to(tok.device) if tc > 0 else None
                    x_c.append(tok if noise is None else (1 - tc) * tok + tc * noise)
                    t_c.append(torch.full((tok.shape[0],), tc))
                    pos_c.append(lp)
        clean = {"x": torch.cat(x_c), "t": torch.cat(t_c), "pos": torch.cat(pos_c)}
        if not x0_n:
            return clean, None
        noised = {"x0": torch.cat(x0_n).to(device), "t": torch.cat(t_n).to(device), "pos": torch.cat(pos_n).to(device),
                  "w": torch.cat(w_n).to(device), "per_clip": per_clip}
        return clean, noised

    def _answer_ce(self, hidden: Tensor, plans: list[_Plan], device: torch.device, total: float | None = None) -> Tensor:
        """Cross-entropy of the answer tokens (simulator-state and progress questions): their
        mean, or their sum over `total` (the global batch's count, in distributed training).
        With `total` the head runs even on no answers, so that lm_head has a gradient on every
        rank: FSDP reduces the gradients of the same parameters on all ranks. A total of 0 (no
        answer in the whole batch) skips the head as the single-process mean does, on every rank
        alike, so that the optimiser does not step lm_head on a zero gradient."""
        tgt = [(b, i, y) for b, pl in enumerate(plans) for i, y in pl.ce_targets]
        if not tgt and not total:
            return torch.zeros((), device=device)
        bi = torch.tensor([(b, i) for b, i, _ in tgt], dtype=torch.long, device=device).reshape(-1, 2)
        logits = self.model.language_model.lm_head(hidden[bi[:, 0], bi[:, 1]]).float()
        y = torch.tensor([y for *_, y in tgt], dtype=torch.long, device=device)
        if total is None:
            return F.cross_entropy(logits, y)
        return F.cross_entropy(logits, y, reduction="sum") / max(total, 1.0)

    def _change_weights(self, tok: Tensor, prev: Tensor) -> Tensor:
        """(N,) flow-loss weights: 1 + change_weight * (token change from the previous frame,
        relative to the frame's mean change). Where the action shows is where it is learnt."""
        if self.args.change_weight <= 0:
            return torch.ones(tok.shape[0], device=tok.device)
        d = ((tok - prev) ** 2).mean(-1)
        return 1 + self.args.change_weight * d / (d.mean() + 1e-6)

    # ---- optimisation ------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        a = self.args
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        frac = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
        return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * frac))

    def train_step(self, clips: list[Clip], gen: torch.Generator) -> dict:
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        t0 = time.perf_counter()
        loss, parts = self.loss(clips, gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.trainable, self.args.grad_clip)
        self.opt.step()
        with torch.no_grad():
            # Warm-up: early on the average must not be dominated by the random init
            # (with 0.999 from step 0, 37% of the EMA is still the init at step 1000).
            d = min(self.args.ema_decay, (1 + self.step) / (10 + self.step))
            for k, v in self.model.state_dict().items():
                if v.is_floating_point():
                    self.ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        self.step += 1
        parts.update(step=self.step, grad_norm=gnorm.item(), lr=self.lr_at(self.step - 1), sec=time.perf_counter() - t0)
        return parts

    # ---- checkpoints -------------------------------------------------------------------
    def state(self, sampler_rng: np.random.Generator, gen: torch.Generator) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema, "opt": self.opt.state_dict(), "step": self.step,
                "args": asdict(self.args), "np_rng": sampler_rng.bit_generator.state, "torch_rng": gen.get_state(),
                "history": self.history}

    def load_state(self, st: dict, sampler_rng: np.random.Generator, gen: torch.Generator) -> None:
        self.model.load_state_dict(st["model"])
        self.ema = st["ema"]
        self.opt.load_state_dict(st["opt"])
        self.step = st["step"]
        sampler_rng.bit_generator.state = st["np_rng"]
        gen.set_state(st["torch_rng"].cpu())
        self.history = st.get("history", [])

    def save(self, folder: Path, sampler_rng: np.random.Generator, gen: torch.Generator) -> None:
        """The resumable state: folder/train_state.pt, replaced atomically."""
        path = folder / "train_state.pt"
        torch.save(self.state(sampler_rng, gen), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def resume(self, folder: Path, sampler_rng: np.random.Generator, gen: torch.Generator) -> bool:
        """Load folder/train_state.pt if there is one; True if it did."""
        path = folder / "train_state.pt"
        if not path.is_file():
            if (folder / "dist_state").is_dir():
                raise RuntimeError(f"{folder} holds the state of a distributed run (dist_state/); resume it with "
                                   "--distributed under torchrun, or train elsewhere (--work)")
            return False
        self.load_state(torch.load(path, weights_only=False, map_location=self.model.vae2llm.weight.device),
                        sampler_rng, gen)
        return True

    def full_ema(self) -> dict[str, Tensor] | None:
        """The EMA weights, whole and on the CPU, for export (None on ranks that do not export)."""
        return {k: v.cpu() for k, v in self.ema.items()}


def length_buckets(lengths: list[int], min_saving: float = 0.25) -> list[list[int]]:
    """The batch rows split into at most two groups by sequence length, short then long,
    where padding each group to its own longest row saves at least `min_saving` of the
    padded token rows of one group; otherwise one group of every row."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n, longest = len(order), max(lengths)
    best_k, best = 0, n * longest
    for k in range(1, n):  # rows order[:k] form the short group
        cost = k * lengths[order[k - 1]] + (n - k) * longest
        if cost < best:
            best_k, best = k, cost
    if best_k == 0 or best > (1 - min_saving) * n * longest:
        return [list(range(n))]
    return [sorted(order[:best_k]), sorted(order[best_k:])]


def _sub_batch(b: _Batch, rows: list[int]) -> _Batch:
    """The clips `rows` of a prepared batch, with their own tokens and draws, padded to their
    own longest; the totals stay the whole batch's."""
    kinds = b.kinds[rows]
    L = int((kinds >= 0).sum(1).max())
    kinds, pos = kinds[:, :L], b.pos[rows, :L]

    def take(counts: list[int]) -> Tensor:
        """Token indices of the rows' blocks, in the packed (row-major) order."""
        starts = np.concatenate([[0], np.cumsum(counts)])
        return torch.cat([torch.arange(int(starts[r]), int(starts[r + 1])) for r in rows])

    clean_idx = take([int((k == 2).sum()) for k in b.kinds])
    clean = {k: v[clean_idx] for k, v in b.clean.items()}
    noised, eps = None, None
    if b.noised is not None and sum(b.noised["per_clip"][r] for r in rows):
        idx = take(b.noised["per_clip"]).to(b.noised["x0"].device)
        noised = {k: b.noised[k][idx] for k in ("x0", "t", "pos", "w")}
        noised["per_clip"] = [b.noised["per_clip"][r] for r in rows]
        eps = b.eps[idx]
    return _Batch([b.clips[r] for r in rows], [b.plans[r] for r in rows], kinds, pos, clean, noised, eps, b.totals)


def to_tensor_uint8(frame: np.ndarray) -> Tensor:
    from PIL import Image

    return to_tensor(Image.fromarray(frame))


def train_world(
    trainer: WorldTrainer,
    sampler: ClipSampler,
    out_dir: Path,
    on_checkpoint=None,
    progress: bool = True,
) -> None:
    """Run until trainer.args.steps, logging to out_dir/loss.jsonl and saving the resumable
    state (`trainer.save`) every ckpt_every steps; a saved state is resumed automatically.
    Every rank of a distributed run calls this; the main rank logs."""
    from tqdm.auto import tqdm

    a = trainer.args
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(a.seed)
    if trainer.resume(out_dir, sampler.rng, gen):
        log.info("resumed from %s at step %d", out_dir, trainer.step)
    bar = tqdm(total=a.steps, initial=trainer.step, desc="train world model", disable=not progress or not trainer.is_main)
    with open(out_dir / "loss.jsonl", "a") if trainer.is_main else contextlib.nullcontext() as logf:
        acc: list[dict] = []
        while trainer.step < a.steps:
            parts = trainer.train_step(sampler.sample_batch(trainer.local_batch), gen)
            acc.append(parts)
            bar.update(1)
            if trainer.step % a.log_every == 0 or trainer.step == a.steps:
                row = {k: float(np.mean([p[k] for p in acc])) for k in ("loss", "mse", "ce", "grad_norm", "sec")}
                tokens_per_s = sum(p["tokens"] for p in acc) / sum(p["sec"] for p in acc)
                row.update(step=trainer.step, lr=parts["lr"], tokens_per_s=tokens_per_s)
                if logf is not None:
                    logf.write(json.dumps(row) + "\n")
                    logf.flush()
                trainer.history.append(row)
                bar.set_postfix(mse=f"{row['mse']:.3f}", ce=f"{row['ce']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                acc = []
            if trainer.step % a.ckpt_every == 0 or trainer.step == a.steps:
                trainer.save(out_dir, sampler.rng, gen)
                if on_checkpoint is not None:
                    on_checkpoint(trainer)
    bar.close()


def debias_ema(ema: dict[str, Tensor], init: dict[str, Tensor], decay: float, steps: int) -> dict[str, Tensor]:
    """Remove the initial weights' share from an EMA kept with a constant decay from step 0.

    ema_t = d^t * init + (1 - d^t) * avg, so avg = (ema_t - d^t * init) / (1 - d^t) (the
    same correction as Adam's moments). Only for runs without EMA warm-up.
    """
    w = decay**steps
    return {k: ((v - w * init[k].to(v.dtype)) / (1 - w)) if v.is_floating_point() else v for k, v in ema.items()}
