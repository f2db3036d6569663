"""`bagel-world eval`: imagined rollouts against the real simulator, frame by frame.

For each task and held-out seed: reset the real env, draw an action sequence from the
task's exploration policy, and play it in the real simulator; open an imagined session on
the same start frame and play the same actions (open loop: the model only ever sees its
own frames). Metrics at each horizon h compare imagined frame h with real frame h: PSNR of
the squared error averaged over episodes (so an episode where the real frame did not change
gives the copy baseline zero error instead of an infinite PSNR that swamps the mean), SSIM
averaged over episodes (scikit-image), and LPIPS when its network weights are present locally. The
baseline "copy last frame" predicts the start frame at every horizon.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

TASKS = ("navigate", "multiview", "future_frame", "manipulate")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import mean_squared_error

    return float(mean_squared_error(a, b))


def psnr_of_mse(m: float) -> float:
    """PSNR (dB, peak 255) of a mean squared error; inf when the frames are identical."""
    return float("inf") if m == 0 else float(10 * np.log10(255.0**2 / m))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def real_rollout(task: str, seed: int, steps: int, resolution) -> tuple[np.ndarray, list[str]]:
    """Real frames (steps+1, H, W, 3) and the actions taken (exploration policy, seeded)."""
    from bagel_world.training.recorder import make_bare_env, record_episode

    env = make_bare_env(task, resolution)
    try:
        frames, actions, _ = record_episode(env, task, seed, steps, vary=0.0)
    finally:
        env.close()
    return frames, actions


def imagined_rollout(sim, task: str, start: np.ndarray, actions: Sequence[str], seed: int) -> np.ndarray:
    sid = sim.open(task, [start])
    frames = [start]
    for t, a in enumerate(actions):
        frames.append(sim.step([sid], [a], [seed * 1000 + t])[0].frame)
    sim.close(sid)
    return np.stack(frames)


def evaluate(sim, tasks=TASKS, seeds=range(8), horizons=(1, 4, 8, 16), out: str | Path = "out/eval",
             progress: bool = True) -> dict:
    """Run the comparison; write eval.json, eval.md and one strip PNG per task into `out`."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(horizons)
    results: dict = {"horizons": list(horizons), "seeds": list(seeds), "tasks": {}, "lpips": "not computed: "
                     "LPIPS needs pretrained backbone weights, which are not present locally"}
    for task in tasks:
        res = tuple(sim.tasks()[task].resolution)
        per = {h: {"mse": [], "ssim": [], "copy_mse": [], "copy_ssim": []} for h in horizons}
        strip = None
        for seed in tqdm(list(seeds), desc=f"eval {task}", disable=not progress):
            real, actions = real_rollout(task, seed, steps, res)
            imag = imagined_rollout(sim, task, real[0], actions, seed)
            for h in horizons:
                per[h]["mse"].append(mse(real[h], imag[h]))
                per[h]["ssim"].append(ssim(real[h], imag[h]))
                per[h]["copy_mse"].append(mse(real[h], real[0]))
                per[h]["copy_ssim"].append(ssim(real[h], real[0]))
            if strip is None:
                strip = _strip(real, imag, actions)
        strip_path = out / f"strip_{task}.png"
        strip.save(strip_path)
        results["tasks"][task] = {
            "strip": strip_path.name,
            "per_horizon": {str(h): _summary(m) for h, m in per.items()},
        }
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "eval.md").write_text(markdown_table(results))
    return results


def _summary(m: dict[str, list[float]]) -> dict[str, float]:
    out = {k: float(np.mean(v)) for k, v in m.items()}
    out["psnr"], out["copy_psnr"] = psnr_of_mse(out["mse"]), psnr_of_mse(out["copy_mse"])
    return out


def markdown_table(results: dict) -> str:
    lines = ["| task | horizon | PSNR model | PSNR copy-last | SSIM model | SSIM copy-last | beats baseline (PSNR) |",
             "|---|---|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        for h, m in r["per_horizon"].items():
            win = "yes" if m["psnr"] > m["copy_psnr"] else "no"
            lines.append(f"| {task} | {h} | {m['psnr']:.2f} | {m['copy_psnr']:.2f} | {m['ssim']:.3f} | "
                         f"{m['copy_ssim']:.3f} | {win} |")
    return "\n".join(lines) + f"\n\nLPIPS: {results['lpips']}.\n"


def _strip(real: np.ndarray, imag: np.ndarray, actions, scale: int = 2) -> Image.Image:
    """Real frames above imagined frames, left to right in time."""
    top = np.concatenate(list(real), axis=1)
    bottom = np.concatenate(list(imag), axis=1)
    gap = np.full((2, top.shape[1], 3), 255, np.uint8)
    img = Image.fromarray(np.concatenate([top, gap, bottom], axis=0))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)
