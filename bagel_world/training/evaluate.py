"""`bagel-world eval`: imagined rollouts against the real simulator, frame by frame.

For each task and held-out seed: reset the real env, draw an action sequence from the
task's exploration policy, and play it in the real simulator; open an imagined session on
the same start frame and play the same actions (open loop: the model only ever sees its
own frames). All episodes of a task are imagined together, one batched step per horizon.
Metrics at each horizon h compare imagined frame h with real frame h:

- **PSNR** of the squared error averaged over episodes (so an episode where the real frame
  did not change gives the copy baseline zero error instead of an infinite PSNR that swamps
  the mean), and **SSIM** averaged over episodes (scikit-image);
- **persistence**: the IoU between the colour masks of the task's objects in the imagined
  and the real frame (`persistence.py`), averaged over (episode, colour) where the object
  is visible in the real frame; an object that fades, moves wrongly, duplicates or changes
  colour lowers it;
- the baseline "copy last frame" predicts the start frame at every horizon, and gets the
  same three metrics.

**The autoencoder's ceiling** (local checkpoints): every imagined frame comes out of the
autoencoder's decoder, so the real frames at the evaluated horizons, encoded and decoded
again (`autoencoder_ceiling`), bound what the world model can reach: their PSNR, SSIM and
persistence against the real frames. Colours or objects the autoencoder loses (it was
trained on other recordings) cap fidelity and persistence whatever the world model learns.

**Controllability** (`controllability.py`): from real states along the same episodes, every
canonical action is imagined from the same state and compared with the real outcome of
every action. LPIPS is not computed: it needs pretrained network weights, which cannot be
downloaded here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from PIL import Image

from bagel_world.simulator.tasks import TASK_NAMES
from bagel_world.training.controllability import Controllability, confusion_image, imagine_each, real_each
from bagel_world.training.persistence import TASK_COLOURS, persistence

log = logging.getLogger(__name__)

TASKS = TASK_NAMES
DEFAULT_HORIZONS = (1, 4, 8, 16, 32, 64)
STRIP_HORIZONS = (0, 1, 2, 4, 8, 16, 32, 64)  # frames shown in a strip (those within the rollout)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import mean_squared_error

    return float(mean_squared_error(a, b))


def psnr_of_mse(m: float) -> float:
    """PSNR (dB, peak 255) of a mean squared error; inf when the frames are identical."""
    return float("inf") if m == 0 else float(10 * np.log10(255.0**2 / m))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def check_eval_args(sim, tasks: Sequence[str], seeds: Sequence[int], horizons: Sequence[int], episode_steps: int,
                    trained_tasks: Sequence[str] | None = None) -> None:
    """Clear errors for what `evaluate` cannot do, before any work starts."""
    known = sorted(sim.tasks())
    for t in tasks:
        if t not in TASKS or t not in known:
            raise ValueError(f"unknown task {t!r}; accepted: {', '.join(t for t in TASKS if t in known)} or 'all'")
        if trained_tasks is not None and t not in trained_tasks:
            raise ValueError(f"the checkpoint's world.json has no task {t!r} (it has {sorted(trained_tasks)}); "
                             f"evaluate only tasks it was trained on")
    if len(list(seeds)) < 1:
        raise ValueError(f"need at least 1 episode, got {len(list(seeds))}")
    if isinstance(episode_steps, bool) or not isinstance(episode_steps, int) or episode_steps < 1:
        raise ValueError(f"episode_steps must be a positive int, got {episode_steps!r}")
    if not horizons:
        raise ValueError("need at least one horizon")
    bad = [h for h in horizons if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= episode_steps]
    if bad:
        raise ValueError(f"horizons {bad} are outside 1..{episode_steps} (the episode length, --episode-steps); "
                         f"accepted: whole numbers of steps from 1 to {episode_steps}")


def with_sampling(sim, spec: str):
    """A local simulator on the same loaded model whose every task samples with `spec`'s
    changes to its own settings (`SamplingSettings.overridden`): a sampler sweep without
    copying checkpoint folders."""
    from bagel_world.simulator.local import LocalSimulator

    if not isinstance(sim, LocalSimulator):
        raise ValueError(f"sampling overrides need a local simulator (a loaded checkpoint), got {type(sim).__name__}")
    templates = {t: replace(tpl, sampling=tpl.sampling.overridden(spec)) for t, tpl in sim.tasks().items()}
    return LocalSimulator(sim.engine, templates)


def real_rollout(task: str, seed: int, steps: int, resolution, env=None) -> tuple[np.ndarray, list[str]]:
    """Real frames (steps+1, H, W, 3) and the actions taken (exploration policy, seeded)."""
    from bagel_world.training.recorder import make_bare_env, record_episode

    own = env is None
    env = make_bare_env(task, resolution) if own else env
    try:
        frames, actions, _ = record_episode(env, task, seed, steps, vary=0.0)
    finally:
        if own:
            env.close()
    return frames, actions


def imagined_rollouts(sim, task: str, starts: Sequence[np.ndarray], actions: Sequence[Sequence[str]],
                      seeds: Sequence[int]) -> np.ndarray:
    """(E, T+1, H, W, 3): E episodes imagined together, one batched step per time step."""
    sids = [sim.open(task, [s]) for s in starts]
    frames = [[s] for s in starts]
    try:
        for t in range(len(actions[0])):
            outs = sim.step(sids, [a[t] for a in actions], [sd * 1000 + t for sd in seeds])
            for f, o in zip(frames, outs):
                f.append(o.frame)
    finally:
        for s in sids:
            sim.close(s)
    return np.stack([np.stack(f) for f in frames])


def evaluate(sim, tasks=TASKS, seeds=range(8), horizons=DEFAULT_HORIZONS, out: str | Path = "out/eval",
             episode_steps: int | None = None, control_states: int = 6, control_stride: int = 3,
             trained_tasks: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Run the comparison; write eval.json, eval.md, strip and confusion PNGs into `out`.

    Controllability is measured from `control_states` real states per episode, at steps
    0, control_stride, 2*control_stride, ... of the episode.
    """
    from tqdm.auto import tqdm

    from bagel_world.training.recorder import make_bare_env

    seeds, horizons = list(seeds), [int(h) for h in horizons]
    episode_steps = max(horizons) if episode_steps is None else episode_steps
    check_eval_args(sim, tasks, seeds, horizons, episode_steps, trained_tasks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"horizons": horizons, "seeds": seeds, "episode_steps": episode_steps, "tasks": {},
                     "lpips": "not computed: LPIPS needs pretrained backbone weights, which are not present locally"}
    for task in tasks:
        tpl = sim.tasks()[task]
        res = tuple(tpl.resolution)
        env = make_bare_env(task, res)
        try:
            # 1. Real episodes, then the same actions imagined open loop, all episodes at once.
            real, actions = zip(*[real_rollout(task, s, episode_steps, res, env) for s in
                                  tqdm(seeds, desc=f"real {task}", disable=not progress)])
            imag = imagined_rollouts(sim, task, [r[0] for r in real], actions, seeds)
            per = {h: _frame_metrics(task, [r[h] for r in real], imag[:, h], [r[0] for r in real]) for h in horizons}
            ceiling = autoencoder_ceiling(sim, task, [r[h] for r in real for h in horizons])
            # 2. Controllability from real states along the same episodes.
            ctrl = Controllability(tuple(tpl.canonical_actions))
            states = [t for t in range(0, episode_steps, control_stride)][:control_states]
            for s, r, acts in tqdm(list(zip(seeds, real, actions)), desc=f"controllability {task}",
                                   disable=not progress):
                for t in states:
                    ctrl.add(imagine_each(sim, task, r[t], tpl.canonical_actions, s * 1000 + t),
                             real_each(env, s, acts[:t], tpl.canonical_actions))
        finally:
            env.close()
        strip_path, conf_path = out / f"strip_{task}.png", out / f"confusion_{task}.png"
        strip(real[0], {"model": imag[0]}).save(strip_path)
        confusion_image(ctrl, task, conf_path)
        np.savez_compressed(out / f"rollout_{task}.npz", real=real[0], imagined=imag[0], actions=np.array(actions[0]))
        results["tasks"][task] = {
            "strip": strip_path.name,
            "confusion": conf_path.name,
            "per_horizon": {str(h): m for h, m in per.items()},
            "controllability": ctrl.summary(),
            "autoencoder": ceiling,
            "sampling": asdict(tpl.sampling),
        }
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "eval.md").write_text(markdown_table(results))
    return results


def round_trip(sim, frames: Sequence[np.ndarray], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """The frames as the model takes them (resized) and the same encoded and decoded by the
    simulator's autoencoder (frame k with the posterior draw of seed + k, on CPU generators as
    every session's encoding); None for a simulator without a local model (a server)."""
    import torch

    from bagel_world.simulator.local import LocalSimulator

    if not isinstance(sim, LocalSimulator):
        return None
    eng = sim.engine
    pils = [eng.prepare_image(f) for f in frames]
    real = [np.asarray(p) for p in pils]
    back = []
    for i in range(0, len(pils), 32):
        gens = [torch.Generator().manual_seed(seed + i + k) for k in range(len(pils[i : i + 32]))]
        back += eng.decode_batch(eng.encode_images(pils[i : i + 32], gens), real[0].shape[:2])
    return real, back


def autoencoder_ceiling(sim, task: str, frames: Sequence[np.ndarray], seed: int = 0) -> dict | None:
    """PSNR (of the mean squared error), mean SSIM and persistence of the real `frames`
    round-tripped through the simulator's autoencoder (`round_trip`), against themselves; None
    for a simulator without a local model (a server) or without frames."""
    pair = round_trip(sim, frames, seed) if len(frames) else None
    if pair is None:
        return None
    real, recon = pair
    m = float(np.mean([mse(r, x) for r, x in zip(real, recon)]))
    return {"psnr": psnr_of_mse(m), "ssim": float(np.mean([ssim(r, x) for r, x in zip(real, recon)])),
            "persistence": persistence(task, recon, real), "frames": len(frames)}


def _frame_metrics(task: str, real: Sequence[np.ndarray], imag: Sequence[np.ndarray],
                   start: Sequence[np.ndarray]) -> dict[str, float]:
    """PSNR, SSIM and persistence of the model and of copy-last at one horizon, over episodes."""
    m = {"mse": [mse(r, i) for r, i in zip(real, imag)], "copy_mse": [mse(r, s) for r, s in zip(real, start)],
         "ssim": [ssim(r, i) for r, i in zip(real, imag)], "copy_ssim": [ssim(r, s) for r, s in zip(real, start)]}
    out = {k: float(np.mean(v)) for k, v in m.items()}
    out["psnr"], out["copy_psnr"] = psnr_of_mse(out["mse"]), psnr_of_mse(out["copy_mse"])
    out["persistence"] = persistence(task, imag, real)
    out["copy_persistence"] = persistence(task, start, real)
    return out


def markdown_table(results: dict) -> str:
    lines = ["| task | horizon | PSNR model | PSNR copy-last | gain dB | SSIM model | SSIM copy-last | "
             "persistence model | persistence copy-last |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        for h, m in r["per_horizon"].items():
            lines.append(f"| {task} | {h} | {m['psnr']:.2f} | {m['copy_psnr']:.2f} | {m['psnr'] - m['copy_psnr']:+.2f} | "
                         f"{m['ssim']:.3f} | {m['copy_ssim']:.3f} | {fmt(m['persistence'])} | "
                         f"{fmt(m['copy_persistence'])} |")
    lines += ["", "| task | controllability | chance | pairs | states |", "|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        c = r["controllability"]
        lines.append(f"| {task} | {c['accuracy']:.2f} | {c['chance']:.2f} | {c['pairs']} | {c['states']} |")
    ceil = {t: r.get("autoencoder") for t, r in results["tasks"].items()}
    if any(ceil.values()):
        lines += ["", "| task | autoencoder PSNR | autoencoder SSIM | autoencoder persistence | frames |",
                  "|---|---|---|---|---|"]
        lines += [f"| {t} | {c['psnr']:.2f} | {c['ssim']:.3f} | {fmt(c['persistence'])} | {c['frames']} |"
                  for t, c in ceil.items() if c]
    colours = ", ".join(f"{t}: {'/'.join(TASK_COLOURS[t])}" for t in results["tasks"])
    return "\n".join(lines) + f"\n\nPersistence colours: {colours}.\n\nLPIPS: {results['lpips']}.\n"


def fmt(x: float | None) -> str:
    """A figure to 3 decimals, or n/a where there is none (None or not finite)."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def strip(real: np.ndarray, imagined: dict[str, np.ndarray], horizons: Sequence[int] = STRIP_HORIZONS,
          scale: int = 2) -> Image.Image:
    """Real frames above each model's imagined frames, at `horizons` left to right."""
    hs = [h for h in horizons if h < len(real)]
    rows = [np.concatenate([real[h] for h in hs], axis=1)]
    rows += [np.concatenate([im[h] for h in hs], axis=1) for im in imagined.values()]
    gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [r, gap]
    img = Image.fromarray(np.concatenate(parts[:-1], axis=0))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)
