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


class WorldTrainer:
    """Owns the model, its EMA, the optimiser and the frozen autoencoder."""

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

    def loss(self, clips: list[Clip], gen: torch.Generator) -> tuple[Tensor, dict]:
        """Forward one padded batch of clips; returns total loss and its parts.

        A linear recipe; every random draw comes from `gen`, in this order (so a resumed run
        draws what an uninterrupted one would): the plans, the autoencoder's posterior sample,
        each latent frame's timestep or context noise, then the flow noise.
        """
        model = self.model
        device = model.vae2llm.weight.device
        # 1. Token layout of each clip, padded into one batch.
        plans = [self.plan(c, gen) for c in clips]
        kinds, pos = self._batch_layout(plans)
        x = torch.zeros(*kinds.shape, self.config.llm.hidden_size, device=device)
        # 2. Text and marker embeddings.
        text_rows = (kinds == 0).nonzero()
        text_ids = torch.tensor([i for pl in plans for i in pl.text_ids])
        x[text_rows[:, 0], text_rows[:, 1]] = model.embed_text(text_ids.to(device)).float()
        # 3. ViT tokens (trainable SigLIP), one packed call for all frames of the batch.
        vit_rows = (kinds == 1).nonzero()
        x[vit_rows[:, 0], vit_rows[:, 1]] = self._vit_embeddings(plans, clips, device)
        # 4. Latent tokens from the frozen autoencoder: clean context (t = 0, or lightly noised
        #    and told so) and the noised frames to predict (x_t; these carry the flow loss).
        clean, noised = self._latent_tokens(plans, clips, gen, device)
        clean_rows, noised_rows = (kinds == 2).nonzero(), (kinds == 3).nonzero()
        if clean["x"].numel():
            x[clean_rows[:, 0], clean_rows[:, 1]] = model.embed_latents(
                clean["x"].to(device), clean["t"].to(device), clean["pos"].to(device)).float()
        if noised is not None:
            eps = torch.randn(noised["x0"].shape, generator=gen).to(device)
            t = noised["t"][:, None]
            xt = (1 - t) * noised["x0"] + t * eps
            x[noised_rows[:, 0], noised_rows[:, 1]] = model.embed_latents(xt, noised["t"], noised["pos"]).float()
        # 5. The LLM over the packed batch, then the flow-matching MSE and the answers' CE.
        mask = batch_masks([(pl.split_lens, pl.split_modes) for pl in plans], device=device)
        gen_mask = (kinds == 2) | (kinds == 3)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            hidden = model.language_model(x.to(model.dtype), pos.to(device), gen_mask.to(device), mask, None).hidden
            mse = torch.zeros((), device=device)
            if noised is not None:
                v = model.llm2vae(hidden[noised_rows[:, 0], noised_rows[:, 1]]).float()
                w = noised["w"]  # (N,) per-token weights, mean ~1 per frame
                mse = (w[:, None] * (v - (eps - noised["x0"])) ** 2).mean() / w.mean()
            ce = self._answer_ce(hidden, plans, device)
        total = self.args.mse_weight * mse + self.args.ce_weight * ce
        return total, {"mse": mse.item(), "ce": ce.item(), "tokens": int(sum(len(p.kinds) for p in plans))}

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

    def _latent_tokens(self, plans: list[_Plan], clips: list[Clip], gen: torch.Generator,
                       device: torch.device) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """Clean context tokens {x, t, pos} and noised target tokens {x0, t, pos, w} (None if none)."""
        cfg, a = self.config, self.args
        with torch.no_grad():
            frames = [torch.stack([to_tensor_uint8(f) for f in clip.images]) for clip in clips]
            z = self.vae.encode(torch.cat(frames).to(device), generator=gen)  # posterior sample
        x_c, t_c, pos_c, x0_n, t_n, pos_n, w_n = [], [], [], [], [], [], []
        for pl, zc in zip(plans, torch.split(z, [len(c.images) for c in clips])):
            h, w = zc.shape[2] // cfg.latent_patch_size, zc.shape[3] // cfg.latent_patch_size
            lp = flattened_position_ids(h, w, cfg.max_latent_size)
            for f, noised in pl.latent_frames:
                tok = latent_to_tokens(zc[f], cfg.latent_patch_size)
                if noised:
                    t = shift_timesteps(torch.sigmoid(torch.randn((), generator=gen)), a.timestep_shift)
                    x0_n.append(tok)
                    t_n.append(t.expand(tok.shape[0]))
                    pos_n.append(lp)
                    w_n.append(self._change_weights(tok, latent_to_tokens(zc[f - 1], cfg.latent_patch_size)))
                else:
                    # Context-noise augmentation (GameNGen, DIAMOND): half of the context
                    # frames are partly noised, and the model is told how much.
                    tc = a.context_noise * float(torch.rand((), generator=gen))
                    if a.context_noise <= 0 or float(torch.rand((), generator=gen)) < 0.5:
                        tc = 0.0
                    noise = torch.randn(tok.shape, generator=gen).to(tok.device) if tc > 0 else None
                    x_c.append(tok if noise is None else (1 - tc) * tok + tc * noise)
                    t_c.append(torch.full((tok.shape[0],), tc))
                    pos_c.append(lp)
        clean = {"x": torch.cat(x_c), "t": torch.cat(t_c), "pos": torch.cat(pos_c)}
        if not x0_n:
            return clean, None
        noised = {"x0": torch.cat(x0_n).to(device), "t": torch.cat(t_n).to(device), "pos": torch.cat(pos_n).to(device),
                  "w": torch.cat(w_n).to(device)}
        return clean, noised

    def _answer_ce(self, hidden: Tensor, plans: list[_Plan], device: torch.device) -> Tensor:
        """Cross-entropy of the answer tokens (simulator-state and progress questions)."""
        tgt = [(b, i, y) for b, pl in enumerate(plans) for i, y in pl.ce_targets]
        if not tgt:
            return torch.zeros((), device=device)
        bi = torch.tensor([(b, i) for b, i, _ in tgt], device=device)
        logits = self.model.language_model.lm_head(hidden[bi[:, 0], bi[:, 1]]).float()
        return F.cross_entropy(logits, torch.tensor([y for *_, y in tgt], device=device))

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
        parts.update(step=self.step, loss=loss.item(), grad_norm=gnorm.item(), lr=self.lr_at(self.step - 1),
                     sec=time.perf_counter() - t0)
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
    """Run until trainer.args.steps, logging to out_dir/loss.jsonl and checkpointing to
    out_dir/train_state.pt (resumed automatically when present)."""
    from tqdm.auto import tqdm

    a = trainer.args
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(a.seed)
    state_path = out_dir / "train_state.pt"
    if state_path.is_file():
        device = trainer.model.vae2llm.weight.device
        trainer.load_state(torch.load(state_path, weights_only=False, map_location=device), sampler.rng, gen)
        log.info("resumed from %s at step %d", state_path, trainer.step)
    bar = tqdm(total=a.steps, initial=trainer.step, desc="train world model", disable=not progress)
    with open(out_dir / "loss.jsonl", "a") as logf:
        acc: list[dict] = []
        while trainer.step < a.steps:
            parts = trainer.train_step(sampler.sample_batch(a.batch_size), gen)
            acc.append(parts)
            bar.update(1)
            if trainer.step % a.log_every == 0 or trainer.step == a.steps:
                row = {k: float(np.mean([p[k] for p in acc])) for k in ("loss", "mse", "ce", "grad_norm", "sec")}
                tokens_per_s = sum(p["tokens"] for p in acc) / sum(p["sec"] for p in acc)
                row.update(step=trainer.step, lr=parts["lr"], tokens_per_s=tokens_per_s)
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                trainer.history.append(row)
                bar.set_postfix(mse=f"{row['mse']:.3f}", ce=f"{row['ce']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                acc = []
            if trainer.step % a.ckpt_every == 0 or trainer.step == a.steps:
                tmp = state_path.with_suffix(".tmp")
                torch.save(trainer.state(sampler.rng, gen), tmp)
                tmp.replace(state_path)
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
