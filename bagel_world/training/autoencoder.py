"""Stage 1: train the small FLUX-architecture autoencoder on recorded frames.

Loss: L1 + MSE reconstruction of the posterior sample's decode, plus a small KL term
that keeps the posterior close to N(0, I). After training, the latent scale and shift
are measured on the data (shift = mean, scale = 1/std of the unscaled latents), the way
FLUX's 0.3611 / 0.1159 normalise its latents to unit variance for the flow model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bagel_world.model.autoencoder import AutoEncoder
from bagel_world.training.config import DEFAULT_AE_BATCH_SIZE, DEFAULT_AE_STEPS

log = logging.getLogger(__name__)


AE_FINETUNE_LR = 3e-4  # peak rate when `train --ae-finetune` adapts an init's autoencoder to new frames


@dataclass
class AETrainArgs:
    steps: int = DEFAULT_AE_STEPS
    batch_size: int = DEFAULT_AE_BATCH_SIZE
    lr: float = 1e-3
    warmup: int = 200  # linear warm-up steps, then a linear decay to a tenth
    run: str = ""  # what this run is (e.g. "fine-tune of <init>"): a saved state resumes only the same run
    kl_weight: float = 1e-6
    seed: int = 0
    log_every: int = 50
    bf16: bool = False  # bf16 autocast makes these small convolutions slower on CPU


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_autoencoder(vae: AutoEncoder, frames: np.ndarray, args: AETrainArgs, out_dir: Path, progress=True) -> dict:
    """Train in place on frames (N, H, W, 3); returns final metrics. Resumes from out_dir."""
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "ae_state.pt"
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99))
    step = 0
    if state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        if "opt" not in st or st.get("run", "") != args.run:
            raise ValueError(f"{state_path} is not a resumable state of this autoencoder run "
                             f"({st.get('run', '') or 'a new autoencoder'!r} with optimiser: {'opt' in st}; this run: "
                             f"{args.run or 'a new autoencoder'!r}); use a new --work folder")
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        step, rng.bit_generator.state = st["step"], st["rng"]
        gen.set_state(st["gen"])
    # Train on the unscaled latent: scale/shift are set after training.
    vae.scale_factor, vae.shift_factor = 1.0, 0.0
    vae.train()
    bar = tqdm(total=args.steps, initial=step, desc="train autoencoder", disable=not progress)
    t0 = time.perf_counter()
    with open(out_dir / "ae_loss.jsonl", "a") as logf:
        while step < args.steps:
            lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup)) * (0.1 + 0.9 * (1 - step / args.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            device = next(vae.parameters()).device
            x = frames_to_tensor(frames[rng.integers(0, len(frames), args.batch_size)]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                mean, logvar = vae.encode_moments(x).float().chunk(2, dim=1)
                logvar = logvar.clamp(-30, 20)
                z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen).to(device)
                rec = vae.decoder(z).float()
            l1, l2 = F.l1_loss(rec, x), F.mse_loss(rec, x)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
            loss = l1 + l2 + args.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.steps:
                psnr = 10 * torch.log10(4.0 / l2.detach().clamp_min(1e-10))  # range [-1, 1] -> peak 2
                row = {"step": step, "l1": l1.item(), "mse": l2.item(), "kl": kl.item(), "psnr": psnr.item(),
                       "lr": lr, "elapsed_s": time.perf_counter() - t0}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                bar.set_postfix(psnr=f"{float(psnr):.1f}")
                torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "run": args.run,
                            "rng": rng.bit_generator.state, "gen": gen.get_state()}, state_path)
    bar.close()
    return calibrate_latents(vae, frames, args.seed)


@torch.no_grad()
def calibrate_latents(vae: AutoEncoder, frames: np.ndarray, seed: int = 0, n: int = 2048) -> dict:
    """Set shift = mean and scale = 1/std of the posterior samples; return them with PSNR."""
    vae.eval()
    vae.scale_factor, vae.shift_factor = 1.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(frames), size=min(n, len(frames)), replace=False)
    gen = torch.Generator().manual_seed(seed)
    zs, errs = [], []
    for i in range(0, len(idx), 128):
        x = frames_to_tensor(frames[idx[i : i + 128]]).to(next(vae.parameters()).device)
        z = vae.encode(x, generator=gen)
        zs.append(z)
        errs.append(((vae.decode(z).clamp(-1, 1) - x) ** 2).mean(dim=(1, 2, 3)))
    z = torch.cat(zs)
    shift, std = float(z.mean()), float(z.std())
    vae.shift_factor, vae.scale_factor = shift, 1.0 / std
    vae.config.shift_factor, vae.config.scale_factor = shift, 1.0 / std
    mse = torch.cat(errs)
    psnr = float((10 * torch.log10(4.0 / mse.clamp_min(1e-10))).mean())
    return {"shift_factor": shift, "scale_factor": 1.0 / std, "recon_psnr_db": psnr}
