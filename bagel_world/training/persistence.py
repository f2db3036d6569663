"""Object persistence: are the task's objects where the real simulator has them?

Every real twin draws its objects in saturated colours on grey, white or checkered
surroundings (MiniWorld's red box; MuJoCo primitives from one palette; Fetch's red block
and blue arm), so a pixel's hue tells which object it belongs to. A colour mask is the set
of pixels with saturation >= 0.45, value >= 0.2 and hue in that colour's range.

persistence(h) = mean over (episode, colour) of IoU(mask in imagined frame h, mask in real
frame h), over the pairs whose real mask is not empty (the object is in view). An object
that fades into the background, drifts, duplicates or changes colour lowers the IoU; 1.0
means every object's pixels match exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# colour -> hue range in degrees [lo, hi) (red wraps around 0)
HUES = {
    "red": (345.0, 15.0),
    "orange": (15.0, 40.0),
    "yellow": (40.0, 75.0),
    "green": (80.0, 170.0),
    "blue": (185.0, 255.0),
    "purple": (260.0, 320.0),
}
# task -> the colours of its objects
TASK_COLOURS = {
    "navigate": ("red",),  # the red box
    "multiview": ("red", "orange", "yellow", "green", "blue", "purple"),  # the palette's primitives
    "future_frame": ("red", "yellow", "green", "blue"),  # ball, capsule, cylinder, box
    "manipulate": ("red", "blue"),  # the block and the Fetch arm's blue links
}
MIN_SATURATION, MIN_VALUE = 0.45, 0.2


def colour_masks(frame: np.ndarray, colours: Sequence[str]) -> np.ndarray:
    """(len(colours), H, W) bool masks of one (H, W, 3) uint8 frame."""
    x = frame.astype(np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    d = np.maximum(delta, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60.0
    vivid = (sat >= MIN_SATURATION) & (mx >= MIN_VALUE)
    out = []
    for c in colours:
        lo, hi = HUES[c]
        in_range = (hue >= lo) | (hue < hi) if lo > hi else (hue >= lo) & (hue < hi)
        out.append(vivid & in_range)
    return np.stack(out)


def persistence(task: str, imagined: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> float:
    """Mean colour-mask IoU over (frame pair, colour) with the colour present in the real frame;
    NaN when no object is visible in any real frame."""
    colours = TASK_COLOURS[task]
    ious = []
    for im, re in zip(imagined, real):
        mi, mr = colour_masks(im, colours), colour_masks(re, colours)
        for a, b in zip(mi, mr):
            if b.any():
                ious.append((a & b).sum() / (a | b).sum())
    return float(np.mean(ious)) if ious else float("nan")
