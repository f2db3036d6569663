"""The main job (`bagel-world demo`): a short imagined episode per env, saved as GIFs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image


def panel(frame: np.ndarray, goal: np.ndarray | None, scale: int = 4) -> Image.Image:
    """The frame, with the goal image beside it when there is one; upscaled for viewing."""
    if goal is not None:
        gap = np.full((frame.shape[0], 2, 3), 255, np.uint8)
        frame = np.concatenate([frame, gap, goal], axis=1)
    img = Image.fromarray(frame)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_gif(frames: list[Image.Image], path: Path, fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def run_demo(out="out/demo", steps: int = 8, seed: int = 0, checkpoint=None, backend=None, device=None,
             env_ids=None, scale: int = 4) -> list[dict]:
    """Run each env for `steps` canonical actions (in turn); write one GIF per env."""
    import gymnasium as gym

    from bagel_world.envs import ENV_IDS

    rows = []
    for env_id in env_ids or ENV_IDS:
        env = gym.make(env_id, render_mode="rgb_array", checkpoint=checkpoint, backend=backend, device=device)
        actions = env.unwrapped.template.canonical_actions
        obs, info = env.reset(seed=seed)
        goal = obs.get("goal") if isinstance(obs, dict) else None
        frames, total = [panel(env.render(), goal, scale)], 0.0
        t0 = time.perf_counter()
        n = 0
        for t in range(steps):
            obs, reward, terminated, truncated, info = env.step(actions[t % len(actions)])
            frames.append(panel(env.render(), goal, scale))
            total += float(reward)
            n += 1
            if terminated or truncated:
                break
        wall = time.perf_counter() - t0
        path = Path(out) / f"{env_id}.gif"
        save_gif(frames, path, env.metadata.get("render_fps", 4))
        env.close()
        rows.append({"env": env_id, "steps": n, "return": total, "steps_per_s": n / max(wall, 1e-9), "gif": str(path)})
    return rows
