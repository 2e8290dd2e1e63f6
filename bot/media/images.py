"""Photos for a model that can see: bounded in size before they are sent.

A model is billed (and slowed) by image size, and providers cap it, so an
image is passed on as it is only when it is a JPEG, PNG or WebP within the
configured side and byte limits; otherwise it is scaled down and re-encoded
as JPEG, at lower quality until it fits. Pillow does the decoding, so a file
that only claims to be an image is refused here."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from bot.llm.types import ImagePart

PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
JPEG_QUALITIES = (85, 75, 60, 45)
# Decoding a huge image costs memory before we can scale it; Pillow's own
# bomb check fires at ~89 Mpx, we refuse earlier.
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageLimits:
    max_side: int  # pixels, the longer side
    max_bytes: int


class ImageUnreadable(Exception):
    """Not an image Pillow can open (corrupt, truncated, another format)."""


def fit_image(data: bytes, limits: ImageLimits) -> ImagePart:
    """The image as a model should get it; raises ImageUnreadable."""
    image = _open(data)
    mime = PASS_THROUGH.get(image.format or "")
    if mime and max(image.size) <= limits.max_side and len(data) <= limits.max_bytes:
        return ImagePart(data, mime)
    return ImagePart(_shrunk_jpeg(image, limits), "image/jpeg")


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageUnreadable("the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ImageUnreadable(f"the image is too large ({image.width}x{image.height})")
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageUnreadable(str(exc) or exc.__class__.__name__) from None
    return image


def _shrunk_jpeg(image: Image.Image, limits: ImageLimits) -> bytes:
    frame = _flattened(image)
    frame.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    encoded = b""
    for quality in JPEG_QUALITIES:
        encoded = _jpeg(frame, quality)
        if len(encoded) <= limits.max_bytes:
            return encoded
    # Still too big at the lowest quality: halve the sides until it fits.
    while len(encoded) > limits.max_bytes and min(frame.size) > 64:
        frame = frame.resize((max(1, frame.width // 2), max(1, frame.height // 2)), Image.Resampling.LANCZOS)
        encoded = _jpeg(frame, JPEG_QUALITIES[-1])
    return encoded


def _flattened(image: Image.Image) -> Image.Image:
    """RGB on white: JPEG has no transparency, and an animation's first frame stands for it."""
    image.seek(0)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _jpeg(frame: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
