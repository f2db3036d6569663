"""Frames on the wire: lossless PNG, base64 in JSON. One home for the client (`remote`) and
the server (`bagel_world.server.images`, which adds the checks of untrusted uploads)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def encode_png(frame: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless; fast compression, since frames are small)."""
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 array, got shape {a.shape} dtype {a.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_b64(frame: np.ndarray) -> str:
    """(H, W, 3) uint8 -> base64 text of its PNG."""
    return base64.b64encode(encode_png(frame)).decode("ascii")


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes (any PNG colour type) -> (H, W, 3) uint8."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
