"""Decode, check and normalise one image to a clean RGB JPEG, or say why it cannot be used.

Real ImageNet holds a PNG named .JPEG, CMYK and grayscale JPEGs and the odd broken file. Every
reader downstream (DALI, FFCV, PIL) is happy with a baseline RGB JPEG, so that is what we store.
A clean RGB JPEG keeps its original bytes (no generation loss, checksum = the source file's);
anything else is converted once and re-encoded at `jpeg_quality`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import layout


@dataclass(frozen=True)
class ImageOptions:
    max_side: int | None = None   # shrink so that max(width, height) <= max_side; None keeps size
    jpeg_quality: int = 95        # used only where an image must be (re-)encoded


@dataclass(frozen=True)
class StoredImage:
    status: str                   # layout.STATUS_*
    reason: str                   # why converted or rejected; "" for a clean image
    data: bytes = b""             # the JPEG to store
    width: int = 0
    height: int = 0


def _reject(reason: str) -> StoredImage:
    return StoredImage(layout.STATUS_REJECTED, reason)


def _encode_jpeg(image: Image.Image, quality: int, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def _fit(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BICUBIC, reducing_gap=3.0)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white (what a viewer shows), not black garbage.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")  # L, 1, P, CMYK (PIL undoes Adobe's CMYK inversion), YCbCr, I


def normalize_bytes(data: bytes, options: ImageOptions) -> StoredImage:
    """An encoded file as found on disk or in a tar -> what we store."""
    if not data:
        return _reject("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        source_format = image.format or "unknown"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return _reject(f"not a readable image: {type(exc).__name__}")
    try:
        image.load()  # decodes every pixel: catches truncated and corrupt files
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return _reject(f"truncated or corrupt {source_format}: {exc}")

    changes = []
    if source_format != "JPEG":
        changes.append(f"{source_format} re-encoded as JPEG")
    if image.mode != "RGB":
        changes.append(f"{image.mode} -> RGB")
    try:
        rgb = _to_rgb(image)
    except (OSError, ValueError) as exc:
        return _reject(f"cannot convert {image.mode} to RGB: {exc}")
    fitted = _fit(rgb, options.max_side)
    if fitted.size != rgb.size:
        changes.append(f"resized {rgb.width}x{rgb.height} -> {fitted.width}x{fitted.height}")
    if not changes:
        return StoredImage(layout.STATUS_OK, "", data, image.width, image.height)
    encoded = _encode_jpeg(fitted, options.jpeg_quality)
    return StoredImage(layout.STATUS_CONVERTED, "; ".join(changes), encoded, fitted.width, fitted.height)


def normalize_pixels(pixels: np.ndarray, options: ImageOptions) -> StoredImage:
    """Decoded pixels (digits, CIFAR, synthetic) -> a JPEG; this first encoding is not a conversion.

    Full-resolution chroma (4:4:4): at 32x32 the usual 4:2:0 halving visibly smears colour edges.
    """
    image = _fit(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)), options.max_side)
    encoded = _encode_jpeg(image, options.jpeg_quality, subsampling=0)
    return StoredImage(layout.STATUS_OK, "", encoded, image.width, image.height)


def normalize(payload: "bytes | np.ndarray", options: ImageOptions) -> StoredImage:
    if isinstance(payload, np.ndarray):
        return normalize_pixels(payload, options)
    return normalize_bytes(payload, options)
