"""GPU check of the BAGEL-7B-MoT code path: one script, about 8 minutes on one H100/H200.

    python benchmarks/gpu_check.py --out out/gpu_check.json      # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run                      # every step on the CPU, tiny sizes, seconds

Needs nothing beyond the project's install (`pip install -e .`, with a CUDA build of torch
on the GPU machine) and the conformance kit at ../shared/conformance (or
$BAGEL_CONFORMANCE_DIR); it downloads and installs nothing. Prints one table per step and
writes everything to a JSON file.

1. Correctness on the device: the conformance kit's tiny checkpoint in fp32 and in bf16,
   against the official CPU fp32 goldens: logits of a text prompt, one guided velocity,
   the 8-timestep (7-step) guided sampling and the decoded image. fp32 must stay within
   the kit's tolerances (1e-4 single pass, 1e-3 sampling, +-1 uint8). bf16 rounds every
   activation to 8 mantissa bits (relative error ~4e-3 per operation, compounding over
   layers and steps), so its bounds are 5e-2 (logits, velocity), 1e-1 (sampling) and
   16 grey levels (image): loose enough for bf16, tight enough to catch a wrong path.
2. 7B size without a download: BAGEL-7B-MoT from its preset with random weights, built on
   the meta device and materialised directly on the GPU in bf16; the memory after load.
3. Generation at official settings: one 512x512 and one 1024x1024 guided generation (50
   timesteps, text + image guidance, 3 branches batched), then the same at 10 timesteps:
   time per denoising step, per image, and peak memory.
4. Env throughput at 7B size: imagined `BagelNavigate-v0` steps/s for vectors of 1, 8 and
   32 at 256x256 and 512x512, at 10 timesteps with text + image guidance (the 7B task
   defaults otherwise: window 2). At 50 timesteps a vector of 32 at 512x512 alone would take
   minutes per step (96 rows of ~1k tokens through 7B active parameters, 49 times), past the
   8-minute budget; the per-step time at 50 scales from the generation rows of step 3.
5. Share of peak: FLOPs of one denoising step counted with torch's FlopCounterMode, over
   its time, as a share of the GPU's dense bf16 peak (table below; `--peak-tflops` for
   another GPU).

`--dry-run` runs the same five steps on the CPU with the tiny kit and the tiny preset at
small sizes and few steps, so `tests/test_gpu_check.py` keeps the script from rotting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 tensor-core peak (no sparsity), TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "A100": 312.0}
FP32_TOL = {"logits": 1e-4, "velocity": 1e-4, "sampling": 1e-3, "image_uint8": 1}
BF16_TOL = {"logits": 5e-2, "velocity": 5e-2, "sampling": 1e-1, "image_uint8": 16}


def kit_dir() -> Path:
    env = os.environ.get("BAGEL_CONFORMANCE_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "conformance"]:
        if (cand / "model" / "ema.safetensors").is_file():
            return cand
    raise SystemExit("conformance kit not found: set BAGEL_CONFORMANCE_DIR or place it at ../shared/conformance")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_gb(device: torch.device, peak: bool = False) -> float:
    if device.type != "cuda":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2**30


# ---- 1. correctness ------------------------------------------------------------------------
def check_correctness(device: torch.device, dtype: torch.dtype) -> dict:
    """Max abs error of each case against the official CPU fp32 goldens."""
    from PIL import Image
    from safetensors.torch import load_file

    from bagel_world.inference.load import load_bagel
    from bagel_world.inference.settings import SamplingSettings

    kit = kit_dir()
    eng = load_bagel(kit / "model", device=device, dtype=dtype)
    text_g = load_file(kit / "golden/01_text/text.safetensors")
    text_m = json.loads((kit / "golden/01_text/text.json").read_text())
    edit_g = load_file(kit / "golden/03_generation/edit_A.safetensors")
    edit_m = json.loads((kit / "golden/03_generation/edit_A.json").read_text())
    step_g = load_file(kit / "golden/03_generation/single_step.safetensors")
    out = {}
    with torch.no_grad():
        # Logits of the packed text prompt.
        ctx = eng.new_context()
        hidden, _ = eng._run([ctx], [eng._text_segment(text_m["single"]["prompts"][0])], causal=True, update=True)
        logits = eng.model.language_model.lm_head(hidden[0]).float().cpu()
        out["logits"] = float((logits - text_g["single.logits"]).abs().max())
        # The three edit contexts, one conditional velocity at t = 0.75.
        img = Image.open(kit / "golden/input_image.png")
        ctxs = eng.build_contexts(["a red cat", img, "the cat on the mat"],
                                  posterior_eps=[edit_g["context_vae.posterior_eps"]])
        v, _, _ = eng.velocity(ctxs[0], step_g["x_t"], 0.75, (64, 96))
        out["velocity"] = float((v.float().cpu() - step_g["v_cond"]).abs().max())
        # Guided sampling, 8 timesteps, and the decoded image.
        st = edit_m["settings"]
        settings = SamplingSettings(num_timesteps=st["num_timesteps"], timestep_shift=st["timestep_shift"],
                                    cfg_text_scale=st["cfg_text_scale"], cfg_img_scale=st["cfg_img_scale"],
                                    cfg_interval=tuple(st["cfg_interval"]), cfg_renorm_type=st["cfg_renorm_type"],
                                    cfg_renorm_min=st["cfg_renorm_min"])
        res = eng.generate_image(*ctxs, settings=settings, noise=edit_g["init_noise"])
        out["sampling"] = float((res.latents[0].float().cpu() - edit_g["final_latent_tokens"]).abs().max())
        want = edit_g["decoded_image_uint8"].numpy().astype(int)
        out["image_uint8"] = int(np.abs(res.images[0].astype(int) - want).max())
    tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
    out["within_tolerance"] = all(out[k] <= tol[k] for k in tol)
    out["tolerance"] = tol
    return out


# ---- 2. the 7B size on the device ----------------------------------------------------------
def build_random(name: str, device: torch.device, dtype: torch.dtype, tmp: str, **overrides):
    """An engine of a preset with random weights, materialised on `device` (never on the CPU
    first for a CUDA device: `to_empty` allocates there, then weights are drawn in place)."""
    from transformers import AutoTokenizer

    from bagel_world.config import preset
    from bagel_world.inference.engine import BagelInference
    from bagel_world.model.autoencoder import AutoEncoder
    from bagel_world.model.bagel import Bagel, sincos_2d_table
    from bagel_world.model.checkpoint_io import build_tokenizer
    from bagel_world.model.qwen2_mot import RotaryEmbedding

    cfg = preset(name)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    with torch.device("meta"):
        model, vae = Bagel(cfg), AutoEncoder(cfg.vae)
    # Cast on the meta device first: the 7B model is allocated once, in bf16 (29 GB), never in fp32.
    model = model.to(dtype).to_empty(device=device)
    vae = vae.to_empty(device=device).float()
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for m in (model, vae):
            for n, p in m.named_parameters():
                if p.ndim >= 2:
                    p.normal_(0.0, 0.02, generator=gen)
                elif "norm" in n and "weight" in n:
                    p.fill_(1.0)
                else:
                    p.zero_()
        for pe in (model.vit_pos_embed, model.latent_pos_embed):
            pe.pos_embed.copy_(torch.from_numpy(sincos_2d_table(pe.pos_embed.shape[1], pe.grid)))
    model.language_model.model.rotary_emb = RotaryEmbedding(cfg.llm.head_dim, cfg.llm.rope_theta).to(device)
    model.requires_grad_(False)
    vae.requires_grad_(False)
    build_tokenizer(tmp)
    return BagelInference(model, vae, AutoTokenizer.from_pretrained(tmp), cfg)


# ---- 3. generation speed -------------------------------------------------------------------
def time_generation(eng, side: int, timesteps: int, device: torch.device) -> dict:
    from bagel_world.inference.settings import SamplingSettings

    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    g = torch.Generator().manual_seed(0)
    ctxs = eng.build_contexts(["a room", img, "turn left 30 degrees"], generator=g)
    full = SamplingSettings(num_timesteps=timesteps, timestep_shift=3.0, cfg_text_scale=4.0, cfg_img_scale=2.0,
                            cfg_interval=(0.0, 1.0), cfg_renorm_type="text_channel")
    one = dataclasses.replace(full, num_timesteps=2)

    def run(s) -> float:
        sync(device)
        t0 = time.perf_counter()
        eng.generate_image(*ctxs, settings=s, generators=g)
        sync(device)
        return time.perf_counter() - t0

    run(one)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_one, t_full = run(one), run(full)
    step_s = (t_full - t_one) / max(timesteps - 2, 1)  # both decode once: the difference is steps
    flops = step_flops(eng, ctxs, side)
    return {"side": side, "timesteps": timesteps, "context_tokens": ctxs[0].length, "step_ms": 1000 * step_s,
            "image_s": t_full, "peak_memory_gb": memory_gb(device, peak=True), "step_tflop": flops / 1e12,
            "tflops_per_s": flops / step_s / 1e12 if step_s > 0 else float("nan")}


def step_flops(eng, ctxs, side: int) -> float:
    """FLOPs of one guided denoising step (3 branches in one batch), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    pos = eng._latent_positions((side, side))
    rows = list(ctxs)
    past, lens = eng._pad_past(rows)
    ropes = torch.tensor([c.rope for c in rows], device=eng.device)
    x = torch.randn(len(rows), pos.shape[0], eng.config.patch_latent_dim, device=eng.device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        eng._velocity(x, torch.tensor(0.5), pos, ropes, past, lens)
    return float(counter.get_total_flops())


# ---- 4. env throughput ---------------------------------------------------------------------
def env_throughput(eng, side: int, num_envs: int, steps: int, timesteps: int, device: torch.device) -> dict:
    import gymnasium as gym

    import bagel_world  # noqa: F401  (registers the ids)
    from bagel_world.simulator.local import LocalSimulator
    from bagel_world.simulator.tasks import default_templates

    tpls = default_templates(large=True)
    tpl = dataclasses.replace(tpls["navigate"], resolution=(side, side),
                              sampling=dataclasses.replace(tpls["navigate"].sampling, num_timesteps=timesteps))
    sim = LocalSimulator(eng, {**tpls, "navigate": tpl})
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, side, side, 3), dtype=np.uint8)
    from bagel_world.simulator.scenarios import ScenarioSet

    scen = ScenarioSet(frames, frames[::-1].copy())
    vec = gym.make_vec("BagelNavigate-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                       simulator=sim, scenarios=scen, action_mode="discrete", success_threshold=1.0,
                       max_episode_steps=steps + 4)
    vec.reset(seed=0)
    n = vec.single_action_space.n
    vec.step(np.zeros(num_envs, np.int64))  # warm-up
    times = []
    for t in range(steps):
        sync(device)
        t0 = time.perf_counter()
        vec.step((np.arange(num_envs) + t) % n)
        sync(device)
        times.append(time.perf_counter() - t0)
    vec.close()
    med = float(np.median(times))
    return {"side": side, "num_envs": num_envs, "timesteps": timesteps, "median_s_per_step": med,
            "env_steps_per_s": num_envs / med}


def gpu_peak_tflops(device: torch.device, override: float | None) -> tuple[str, float | None]:
    if override:
        return "given", override
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BF16_TFLOPS.items():
        if all(w in name for w in key.split()):
            return name, val
    return name, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny kit and tiny preset, small sizes: seconds")
    p.add_argument("--out", default="out/gpu_check.json")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    args = p.parse_args(argv)
    if args.dry_run:
        device, big, sides, vec_sides, envs, steps, gen_ts = torch.device("cpu"), "tiny", (64, 128), (64,), (1, 2), 2, (4, 3)
    else:
        if not torch.cuda.is_available():
            print("gpu_check needs CUDA; use --dry-run to exercise it on the CPU", file=sys.stderr)
            return 2
        device, big, sides, vec_sides, envs, steps, gen_ts = torch.device("cuda"), "bagel-7b-mot", (512, 1024), \
            (256, 512), (1, 8, 32), 2, (50, 10)
    report: dict = {"device": str(device), "dry_run": args.dry_run, "torch": torch.__version__}
    t_start = time.perf_counter()

    print("## 1. correctness against the official fp32 goldens (max abs error)\n")
    print("| dtype | logits | velocity | 7-step sampling | image (grey levels) | within tolerance |")
    print("|---|---|---|---|---|---|")
    report["correctness"] = {}
    for dtype in (torch.float32, torch.bfloat16):
        r = check_correctness(device, dtype)
        report["correctness"][str(dtype).split(".")[-1]] = r
        print(f"| {dtype} | {r['logits']:.2e} | {r['velocity']:.2e} | {r['sampling']:.2e} | {r['image_uint8']} | "
              f"{'yes' if r['within_tolerance'] else 'NO'} |", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # bf16 matmuls crawl on most CPUs
        print(f"\n## 2. {big} from its preset, random weights, {dtype} on {device}\n")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        overrides = {"max_latent_size": 64, "vae_transform": (1024, 16, 16)} if args.dry_run else {}
        eng = build_random(big, device, dtype, tmp, **overrides)
        n_params = sum(p.numel() for p in eng.model.parameters()) + sum(p.numel() for p in eng.vae.parameters())
        report["load"] = {"preset": big, "parameters": n_params, "seconds": time.perf_counter() - t0,
                          "memory_gb": memory_gb(device)}
        print(f"{n_params:,} parameters in {report['load']['seconds']:.1f} s; {report['load']['memory_gb']:.1f} GiB "
              f"allocated after load\n")

        name, peak = gpu_peak_tflops(device, args.peak_tflops)
        print("## 3. guided generation (text + image guidance, 3 branches batched)\n")
        print("| size | timesteps | context tokens | ms per step | s per image | peak GiB | TFLOP per step | "
              "TFLOP/s | share of bf16 peak |")
        print("|---|---|---|---|---|---|---|---|---|")
        report["generation"] = []
        for ts in gen_ts:
            for side in sides:
                r = time_generation(eng, side, ts, device)
                r["share_of_peak"] = r["tflops_per_s"] / peak if peak else None
                report["generation"].append(r)
                share = f"{r['share_of_peak']:.1%}" if peak else "n/a"
                print(f"| {side}x{side} | {ts} | {r['context_tokens']} | {r['step_ms']:.1f} | {r['image_s']:.2f} | "
                      f"{r['peak_memory_gb']:.1f} | {r['step_tflop']:.4g} | {r['tflops_per_s']:.4g} | {share} |",
                      flush=True)

        print(f"\n## 4. imagined env steps/s at {big} size (navigate, window 2)\n")
        print("| size | sub-envs | timesteps | s per vector step | env steps/s |")
        print("|---|---|---|---|---|")
        report["envs"] = []
        for side in vec_sides:
            for n in envs:
                r = env_throughput(eng, side, n, steps, gen_ts[-1], device)
                report["envs"].append(r)
                print(f"| {side}x{side} | {n} | {gen_ts[-1]} | {r['median_s_per_step']:.3f} | "
                      f"{r['env_steps_per_s']:.2f} |", flush=True)

    report["peak_bf16_tflops"] = {"gpu": name, "value": peak}
    report["seconds"] = time.perf_counter() - t_start
    print(f"\n## 5. share of peak: column above, against {peak or 'no known'} TFLOP/s ({name}); "
          f"whole check {report['seconds']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0 if all(r["within_tolerance"] for r in report["correctness"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
