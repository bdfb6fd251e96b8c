"""Decode, check and normalise one image to a clean RGB JPEG, or say why it cannot be used.

Real ImageNet holds a PNG named .JPEG, CMYK and grayscale JPEGs and the odd broken file. Every
reader downstream (DALI, FFCV, PIL) is happy with a baseline RGB JPEG, so that is what we store.
A clean RGB JPEG keeps its original bytes (no generation loss, checksum = the source file's);
anything else is converted once and re-encoded at `jpeg_quality`.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import layout

# Pillow's own default limit (Image.MAX_IMAGE_PIXELS): 89.5 Mpx, ~4x ImageNet's largest image.
DEFAULT_MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class ImageOptions:
    max_side: int | None = None   # shrink so that max(width, height) <= max_side; None keeps size
    jpeg_quality: int = 95        # used only where an image must be (re-)encoded
    # Larger images are rejected from their header, before any pixel is decoded (a decompression
    # bomb must cost a reject, not the run).
    max_pixels: int = DEFAULT_MAX_PIXELS


@contextmanager
def only_our_pixel_limit():
    """Pillow's own decompression-bomb check off while the tool opens and decodes images.

    --max-pixels, checked from the header before decoding, is the tool's only limit: Pillow's would
    otherwise refuse images above twice Image.MAX_IMAGE_PIXELS (178,956,970 by default) whatever
    --max-pixels says, with its own message. The global is restored afterwards (workers decode one
    image at a time; the parent process never decodes while another thread does).
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@dataclass(frozen=True)
class StoredImage:
    status: str                   # layout.STATUS_*
    reason: str                   # why converted or rejected; "" for a clean image
    data: bytes = b""             # the JPEG to store
    width: int = 0
    height: int = 0
    # The RGB pixels of `data` when normalising already decoded exactly those bytes (a clean JPEG
    # kept as it is), so that the pixel statistics need no second decode; else None.
    decoded: Image.Image | None = field(default=None, repr=False, compare=False)


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
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


# 16-bit modes PIL opens grayscale PNG/TIFF in; convert("RGB") would clip them, not scale them.
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_8bit(image: Image.Image) -> Image.Image:
    """I;16 / I (16-bit samples) -> L, scaled by 255/65535; F (floats) -> L, scaled from its range."""
    if image.mode in _HIGH_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(pixels * (255.0 / 65535.0)), 0, 255).astype(np.uint8))
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    image = _to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white (what a viewer shows), not black garbage.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")  # L, 1, P, CMYK (PIL undoes Adobe's CMYK inversion), YCbCr


# EXIF orientation -> the transpose that makes the pixels upright (as ImageOps.exif_transpose does).
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)  # EXIF Orientation
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1  # an unreadable EXIF block: the pixels are still usable as stored


def _open(data: bytes, max_pixels: int):
    """(image with pixels loaded, format) or (None, reason). Size is checked from the header first."""
    with only_our_pixel_limit():
        try:
            image = Image.open(io.BytesIO(data))
            source_format = image.format or "unknown"
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            return None, f"not a readable image: {type(exc).__name__}"
        width, height = image.size
        if width * height > max_pixels:
            return None, (f"{source_format} of {width}x{height} = {width * height} pixels is over the "
                          f"limit of {max_pixels} (raise --max-pixels to keep it)")
        try:
            image.load()  # decodes every pixel: catches truncated and corrupt files
        except (OSError, ValueError, SyntaxError) as exc:
            return None, f"truncated or corrupt {source_format}: {exc}"
    return image, source_format


def normalize_bytes(data: bytes, options: ImageOptions) -> StoredImage:
    """An encoded file as found on disk or in a tar -> what we store."""
    if not data:
        return _reject("empty file (0 bytes)")
    image, source_format = _open(data, options.max_pixels)
    if image is None:
        return _reject(source_format)

    changes = []
    if source_format != "JPEG":
        changes.append(f"{source_format} re-encoded as JPEG")
    if image.mode != "RGB":
        changes.append(f"{image.mode} -> RGB")
    orientation = _orientation(image)
    orientation = orientation if orientation in _EXIF_TRANSPOSE else 1
    try:
        rgb = _to_rgb(image)
        if orientation != 1:
            # DALI's decoder applies EXIF orientation, PIL and FFCV do not: store upright pixels
            # (and no EXIF) so that every loader sees the same image.
            rgb = rgb.transpose(_EXIF_TRANSPOSE[orientation]) if orientation in _EXIF_TRANSPOSE else rgb
            changes.append(f"EXIF orientation {orientation} applied")
    except (OSError, ValueError) as exc:
        return _reject(f"cannot convert {image.mode} to RGB: {exc}")
    fitted = _fit(rgb, options.max_side)
    if fitted.size != rgb.size:
        changes.append(f"resized {rgb.width}x{rgb.height} -> {fitted.width}x{fitted.height}")
    if not changes:
        return StoredImage(layout.STATUS_OK, "", data, image.width, image.height, decoded=rgb)
    encoded = _encode_jpeg(fitted, options.jpeg_quality)
    return StoredImage(layout.STATUS_CONVERTED, "; ".join(changes), encoded, fitted.width, fitted.height)


def normalize_pixels(pixels: np.ndarray, options: ImageOptions) -> StoredImage:
    """Decoded pixels (digits, CIFAR, synthetic) -> a JPEG; this first encoding is not a conversion.

    Full-resolution chroma (4:4:4): at 32x32 the usual 4:2:0 halving visibly smears colour edges.
    """
    image = _fit(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)), options.max_side)
    encoded = _encode_jpeg(image, options.jpeg_quality, subsampling=0)
    return StoredImage(layout.STATUS_OK, "", encoded, image.width, image.height)


def normalize(payload: bytes | np.ndarray, options: ImageOptions) -> StoredImage:
    if isinstance(payload, np.ndarray):
        return normalize_pixels(payload, options)
    return normalize_bytes(payload, options)
