"""Time one denoising step and one full guided image generation.

    python benchmarks/bench_generation.py                 # tiny model on CPU
    python benchmarks/bench_generation.py --model 7b      # BAGEL-7B-MoT size, random weights (CUDA)

Speed does not depend on weight values, so random weights stand in for the real ones.
The context is an edit request (text, image, text) at the output size; one step is one
network evaluation with all three guidance branches in one batch. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import sys
import time

import numpy as np
import torch

from bagel_world.inference.engine import BagelInference
from bagel_world.inference.settings import SamplingSettings


def build_engine(name: str, device: torch.device, dtype: torch.dtype, tmp: str) -> BagelInference:
    """A preset with random weights, materialised on `device` (the GPU check's builder)."""
    from gpu_check import build_random  # benchmarks/ is on sys.path when a script there runs

    if name == "tiny":  # let the tiny model reach 1024 px (64 latent tokens per side)
        return build_random("tiny", device, dtype, tmp, max_latent_size=64, vae_transform=(1024, 16, 16))
    return build_random("bagel-7b-mot", device, dtype, tmp)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_size(engine: BagelInference, side: int, steps: int, repeats: int) -> dict:
    device = engine.device
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3)).astype(np.uint8)
    g = torch.Generator().manual_seed(0)
    gen, cfg_text, cfg_img = engine.build_contexts(["a room", img, "turn left 30 degrees"], generator=g)
    settings = SamplingSettings(num_timesteps=steps, timestep_shift=3.0, cfg_text_scale=4.0, cfg_img_scale=2.0,
                                cfg_interval=(0.0, 1.0), cfg_renorm_type="text_channel")
    one = dataclasses.replace(settings, num_timesteps=2)  # one network evaluation + decode
    engine.generate_image(gen, cfg_text, cfg_img, settings=one, generators=g)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def timed(s) -> float:
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            engine.generate_image(gen, cfg_text, cfg_img, settings=s, generators=g)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        return best

    short = timed(one)
    full_s = timed(settings)
    # Per evaluation: the difference between the full run and the one-step run (both decode once).
    step_s = (full_s - short) / max(steps - 2, 1)
    return {"size": f"{side}x{side}", "context_tokens": gen.length, "step_ms": 1000 * step_s,
            "image_s": full_s, "images_per_s": 1 / full_s, "peak_gb": peak_memory_gb(device)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--steps", type=int, default=50, help="timesteps of the full generation (49 evaluations)")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.model == "7b" and device.type != "cuda":
        print("the 7B-size benchmark needs CUDA (about 30 GB of GPU memory in bf16)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(args.model, device, dtype, tmp)
        rows = [bench_size(engine, int(s), args.steps, args.repeats) for s in args.sizes.split(",")]
    cpu = f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(f"\nmodel={args.model} device={device} ({name}) dtype={dtype} steps={args.steps} guidance=text+image (3 branches)\n")
    print("| size | context tokens | one step, 3 branches (ms) | full image (s) | images/s | peak memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['context_tokens']} | {r['step_ms']:.1f} | {r['image_s']:.2f} | "
              f"{r['images_per_s']:.3f} | {r['peak_gb']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
