"""The main job (`bagel-world demo`): a short imagined episode per env, saved as GIFs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm


def panel(frame: np.ndarray, goal: np.ndarray | None, scale: int = 4, caption: str = "") -> Image.Image:
    """The frame, with the goal image beside it when there is one; upscaled for viewing, with
    a caption strip below ("frame" / "goal" labels, then `caption`, e.g. the step and action)."""
    goal_x = (frame.shape[1] + 2) * scale  # where the goal panel starts in the output
    if goal is not None:
        gap = np.full((frame.shape[0], 2, 3), 255, np.uint8)
        frame = np.concatenate([frame, gap, goal], axis=1)
    img = Image.fromarray(frame)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    out = Image.new("RGB", (img.width, img.height + 24), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((2, img.height), "frame", fill="black")
    if goal is not None:
        draw.text((goal_x + 2, img.height), "goal", fill="black")
    draw.text((2, img.height + 11), caption[: max(8, img.width // 6)], fill="black")
    return out


def save_gif(frames: list[Image.Image], path: Path, fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def run_demo(out="out/demo", steps: int = 8, seed: int = 0, checkpoint=None, backend=None, device=None,
             env_ids=None, scale: int = 4, progress: bool = True) -> list[dict]:
    """Run each env for `steps` canonical actions (in turn); write one GIF per env.

    An episode can end before `steps`: on success (`ended="goal reached"`), on another
    termination, or at the registered time limit; each row says which in `ended`.
    """
    import gymnasium as gym

    from bagel_world.envs import ENV_IDS

    rows = []
    for env_id in env_ids or ENV_IDS:
        env = gym.make(env_id, render_mode="rgb_array", checkpoint=checkpoint, backend=backend, device=device)
        actions = env.unwrapped.get_action_meanings()
        obs, info = env.reset(seed=seed)
        goal = obs.get("goal") if isinstance(obs, dict) else None
        frames, total = [panel(env.render(), goal, scale, "step 0: start")], 0.0
        t0 = time.perf_counter()
        n, ended = 0, f"{steps} steps done"
        for t in tqdm(range(steps), desc=env_id, unit="step", disable=not progress, leave=False):
            action = actions[t % len(actions)]
            obs, reward, terminated, truncated, info = env.step(action)
            frames.append(panel(env.render(), goal, scale, f"step {t + 1}: {action}"))
            total += float(reward)
            n += 1
            if terminated or truncated:
                ended = ("goal reached" if info.get("is_success") else "terminated") if terminated else "time limit"
                break
        wall = time.perf_counter() - t0
        path = Path(out) / f"{env_id}.gif"
        save_gif(frames, path, env.metadata.get("render_fps", 4))
        env.close()
        rows.append({"env": env_id, "steps": n, "ended": ended, "return": total,
                     "steps_per_s": n / max(wall, 1e-9), "gif": str(path)})
    return rows
