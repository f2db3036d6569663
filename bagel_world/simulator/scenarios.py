"""Start scenes for environment resets.

A checkpoint may ship `scenarios/<task>.npz` with arrays `frames` (N, H, W, 3) uint8,
optional `goals` (N, H, W, 3) uint8, and optional `instructions` / `questions` (N,) str.
When a checkpoint ships none (e.g. the published 7B weights), `procedural_scenarios`
draws simple scenes of coloured shapes, so every env still resets out of the box.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw

_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 190),
}


@dataclass
class ScenarioSet:
    frames: np.ndarray  # (N, H, W, 3) uint8
    goals: np.ndarray | None = None  # (N, H, W, 3) uint8
    instructions: list[str] | None = None
    questions: list[str] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix != ".npz":  # as np.savez does
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)  # atomic: a reader (or a resumed run) never sees half a file

    def to_bytes(self) -> bytes:
        """The set as .npz bytes (what `save` writes and `load` reads, from a path or a file object)."""
        arrays = {"frames": self.frames}
        if self.goals is not None:
            arrays["goals"] = self.goals
        if self.instructions is not None:
            arrays["instructions"] = np.array(self.instructions)
        if self.questions is not None:
            arrays["questions"] = np.array(self.questions)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> ScenarioSet:
        with np.load(path, allow_pickle=False) as z:
            frames = z["frames"]
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(f"{path}: 'frames' must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
            return cls(
                frames=frames,
                goals=z["goals"] if "goals" in z else None,
                instructions=[str(s) for s in z["instructions"]] if "instructions" in z else None,
                questions=[str(s) for s in z["questions"]] if "questions" in z else None,
            )


def load_scenarios(folder: str | Path | None, task: str, resolution: tuple[int, int], n: int = 64) -> ScenarioSet:
    """The checkpoint's scenario set for `task`, else a procedural one at `resolution`."""
    if folder is not None:
        path = Path(folder) / "scenarios" / f"{task}.npz"
        if path.is_file():
            return ScenarioSet.load(path)
    return procedural_scenarios(task, resolution, n=n, seed=0)


def procedural_scenarios(task: str, resolution: tuple[int, int], n: int = 64, seed: int = 0) -> ScenarioSet:
    """n scenes of coloured shapes; the goal is the same scene with shapes moved."""
    rng = np.random.default_rng(seed)
    H, W = resolution
    frames, goals, instr, quest = [], [], [], []
    names = list(_COLOURS)
    for _ in range(n):
        shapes = [
            (names[int(rng.integers(len(names)))], float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.45, 0.85)),
             float(rng.uniform(0.08, 0.18)), bool(rng.integers(2)))
            for _ in range(int(rng.integers(2, 4)))
        ]
        dx = float(rng.uniform(-0.25, 0.25))
        frames.append(_draw(shapes, H, W, 0.0, rng.integers(0, 40, 3)))
        goals.append(_draw(shapes, H, W, dx, rng.integers(0, 40, 3)))
        target = shapes[0][0]
        instr.append({"navigate": f"go to where the {target} object is seen as in the goal image",
                      "multiview": f"show the {target} object from other sides",
                      "future_frame": f"watch what happens to the {target} object",
                      "manipulate": f"move the {target} object to match the goal image"}.get(task, f"the {target} object"))
        quest.append(f"Is the {target} object in the centre of the view?")
    return ScenarioSet(np.stack(frames), np.stack(goals), instr, quest)


def _draw(shapes, H: int, W: int, dx: float, tint) -> np.ndarray:
    sky = tuple(int(v) for v in (150 + tint[0], 180 + tint[1], 215))
    img = Image.new("RGB", (W, H), sky)
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(0.55 * H), W, H], fill=(110 + int(tint[2]), 100, 90))  # floor
    for colour, x, y, r, is_box in shapes:
        cx, cy, rr = (x + dx) * W, y * H, r * min(H, W)
        box = [cx - rr, cy - rr, cx + rr, cy + rr]
        (d.rectangle if is_box else d.ellipse)(box, fill=_COLOURS[colour])
    return np.asarray(img, dtype=np.uint8)
