"""Frames on the wire: lossless PNG, base64 in JSON. Uploads are checked before decoding.

A PNG's size is in its IHDR chunk (bytes 16..24), so a decompression bomb (a tiny file
that inflates to gigapixels) is refused from its first 33 bytes, before zlib runs.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

import numpy as np
from PIL import Image

from bagel_world.server.errors import OBJECT_REPR, ApiError, clip
from bagel_world.simulator.codec import encode_png as encode_png  # re-exported for the routes
from bagel_world.simulator.codec import png_b64 as png_b64

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACCEPTED = "PNG (8-bit grey, RGB, RGBA or palette), base64-encoded, optionally as a data:image/png;base64, URL"
_OTHER_FORMATS = {  # magic prefix -> name, to say what was sent instead
    b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP", b"RIFF": "RIFF/WebP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x00\x00\x00\x0cjP": "JPEG 2000",
}


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit_depth, colour_type) from the IHDR chunk; 422 if not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        for magic, name in _OTHER_FORMATS.items():
            if data.startswith(magic):
                raise ApiError(422, "unsupported_image_format", f"got a {name} image; only {ACCEPTED} is accepted")
        raise ApiError(422, "unsupported_image_format", f"not a PNG image; only {ACCEPTED} is accepted")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ApiError(422, "invalid_image", "truncated PNG: no IHDR chunk after the signature")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


def check_png_size(width: int, height: int, max_side: int, max_pixels: int) -> None:
    if width == 0 or height == 0:
        raise ApiError(422, "invalid_image", f"PNG header gives an empty image ({width}x{height})")
    if width > max_side or height > max_side:
        raise ApiError(413, "image_too_large", f"image is {width}x{height} px; the server accepts at most "
                                               f"{max_side} px per side")
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large", f"image is {width}x{height} = {width * height} px; the server "
                                               f"accepts at most {max_pixels} pixels")


def _b64_bytes(text: str, what: str) -> bytes:
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if head != "data:image/png;base64":
            raise ApiError(422, "unsupported_image_format", f"{what}: data URL {clip(head, 40)} is not accepted; "
                                                            f"only {ACCEPTED} is")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_image", f"{what} is not valid base64") from None


def decode_png_b64(text: str, max_side: int, max_pixels: int, what: str = "image") -> np.ndarray:
    """base64 PNG -> (H, W, 3) uint8, refusing other formats and oversized images unread."""
    # 1. Header first: 44 base64 chars = 33 bytes = signature + IHDR. A data URL prefix is
    #    skipped by _b64_bytes, so decode that part whole (bounded by the body limit).
    head = _b64_bytes(text if text.startswith("data:") else text[:44], what)
    width, height, depth, colour = png_header(head)
    check_png_size(width, height, max_side, max_pixels)
    if depth == 16:
        raise ApiError(422, "unsupported_image_format", f"{what} is a 16-bit PNG; only {ACCEPTED} is accepted")
    # 2. Now the whole image, which the header says is small.
    data = head if text.startswith("data:") else _b64_bytes(text, what)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            if img.size != (width, height):
                raise ApiError(422, "invalid_image", f"{what}: PNG header and image data disagree on size")
            if getattr(img, "n_frames", 1) > 1:
                raise ApiError(422, "unsupported_image_format", f"{what} is an animated PNG; send one still frame")
            img.load()
            rgb = img.convert("RGB")  # grey/palette/alpha -> RGB; alpha is dropped
    except ApiError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        # PIL names the buffer by its repr (<_io.BytesIO object at 0x...>): name the field instead.
        reason = OBJECT_REPR.sub(what, str(exc))
        raise ApiError(422, "invalid_image", f"{what} is not a readable PNG: {reason}") from None
    return np.asarray(rgb, dtype=np.uint8)


def make_gif(frames: list[np.ndarray], fps: float = 4.0) -> bytes:
    """Animated GIF of (H, W, 3) uint8 frames, looping."""
    if not frames:
        raise ValueError("make_gif needs at least one frame")
    imgs = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()
