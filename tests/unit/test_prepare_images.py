"""data_prep.images: odd files found in real ImageNet are converted to RGB JPEG or rejected with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dtrain_prep import fixtures, layout
from dtrain_prep.fixtures import ODD_FILES
from dtrain_prep.images import ImageOptions, normalize_bytes, normalize_pixels
from dtrain_prep.samples import synthetic_pixels

PIXELS = synthetic_pixels(7, 64, 48)


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("kind", sorted(ODD_FILES))
def test_each_odd_file_is_converted_to_rgb_jpeg_or_rejected_with_reason(kind):
    make, fate = ODD_FILES[kind]
    stored = normalize_bytes(make(PIXELS), ImageOptions())
    assert stored.status == fate
    assert stored.reason
    if fate == layout.STATUS_CONVERTED:
        image = _decode(stored.data)
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 48))
        assert (stored.width, stored.height) == (64, 48)
    else:
        assert stored.data == b"" and stored.width == 0


def test_clean_rgb_jpeg_keeps_its_original_bytes():
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, format="JPEG", quality=80)
    stored = normalize_bytes(buffer.getvalue(), ImageOptions(max_side=64))
    assert stored.status == layout.STATUS_OK and stored.reason == ""
    assert stored.data == buffer.getvalue()


def test_cmyk_conversion_keeps_the_colours():
    make, _ = ODD_FILES["cmyk"]
    stored = normalize_bytes(make(PIXELS), ImageOptions(jpeg_quality=95))
    difference = np.abs(np.asarray(_decode(stored.data), dtype=float) - PIXELS).mean()
    assert difference < 12, "CMYK -> RGB must not invert or scramble the channels"


def test_max_side_shrinks_the_longer_side_and_keeps_aspect():
    buffer = io.BytesIO()
    Image.fromarray(synthetic_pixels(1, 200, 100)).save(buffer, format="JPEG")
    stored = normalize_bytes(buffer.getvalue(), ImageOptions(max_side=50))
    assert stored.status == layout.STATUS_CONVERTED and "resized 200x100 -> 50x25" in stored.reason
    assert _decode(stored.data).size == (50, 25)


def test_pixels_encode_deterministically():
    first = normalize_pixels(PIXELS, ImageOptions(jpeg_quality=95))
    assert first.data == normalize_pixels(PIXELS.copy(), ImageOptions(jpeg_quality=95)).data
    assert np.abs(np.asarray(_decode(first.data), dtype=float) - PIXELS).mean() < 4


def test_transparent_png_becomes_white_not_black():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    stored = normalize_bytes(buffer.getvalue(), ImageOptions())
    assert stored.status == layout.STATUS_CONVERTED
    assert np.asarray(_decode(stored.data)).min() > 240


def test_decompression_bomb_is_rejected_from_its_header():
    stored = normalize_bytes(fixtures.png_declaring(30000, 30000), ImageOptions())
    assert stored.status == layout.STATUS_REJECTED and "pixels" in stored.reason


def test_pixel_limit_is_configurable():
    data = _png(PIXELS)
    assert normalize_bytes(data, ImageOptions(max_pixels=64 * 48)).status == layout.STATUS_CONVERTED
    stored = normalize_bytes(data, ImageOptions(max_pixels=64 * 48 - 1))
    assert stored.status == layout.STATUS_REJECTED and "--max-pixels" in stored.reason


# Above twice Pillow's default Image.MAX_IMAGE_PIXELS (178,956,970), where Pillow itself refuses.
OVER_PILLOWS_LIMIT = (14000, 13000)  # 182,000,000 pixels


def test_the_tools_limit_is_the_only_one_above_pillows_own():
    """Only the header is read here (the declared 182 Mpx are never decoded): at --max-pixels 150M
    the reject is the tool's sentence; at 200M the header passes both limits, Pillow's included,
    and the (bogus) pixel data is what fails. Pillow's global is left as it was."""
    pillows_limit = Image.MAX_IMAGE_PIXELS
    data = fixtures.png_declaring(*OVER_PILLOWS_LIMIT)
    below = normalize_bytes(data, ImageOptions(max_pixels=150_000_000))
    assert below.status == layout.STATUS_REJECTED
    assert below.reason == ("PNG of 14000x13000 = 182000000 pixels is over the limit of 150000000 "
                            "(raise --max-pixels to keep it)")
    above = normalize_bytes(data, ImageOptions(max_pixels=200_000_000))
    assert above.status == layout.STATUS_REJECTED and above.reason.startswith("truncated or corrupt PNG")
    assert "limit" not in above.reason and "bomb" not in above.reason
    assert pillows_limit == Image.MAX_IMAGE_PIXELS


def _png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    source = Image.open(io.BytesIO(buffer.getvalue()))
    assert source.mode.startswith("I")  # really a 16-bit image, not one PIL already reduced
    stored = normalize_bytes(buffer.getvalue(), ImageOptions())
    assert stored.status == layout.STATUS_CONVERTED
    gray = np.asarray(_decode(stored.data).convert("L"), dtype=np.float64)
    expected = ramp / 257.0
    assert np.abs(gray - expected).mean() < 3
    assert gray[:, 0].mean() < 10 and gray[:, -1].mean() > 245


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_so_every_loader_sees_upright_pixels(orientation):
    from PIL import ImageOps

    source = Image.fromarray(PIXELS)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    stored = normalize_bytes(buffer.getvalue(), ImageOptions())
    assert stored.status == layout.STATUS_CONVERTED and "orientation" in stored.reason
    upright = np.asarray(ImageOps.exif_transpose(_decode(buffer.getvalue())).convert("RGB"), dtype=np.float64)
    result = _decode(stored.data)
    assert (stored.width, stored.height) == result.size == (upright.shape[1], upright.shape[0])
    assert _orientation_of(stored.data) == 1
    assert np.abs(np.asarray(result, dtype=np.float64) - upright).mean() < 4


def _orientation_of(data: bytes) -> int:
    return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1))


def test_jpeg_without_orientation_keeps_its_bytes():
    exif = Image.Exif()
    exif[0x0112] = 1
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    assert normalize_bytes(buffer.getvalue(), ImageOptions()).data == buffer.getvalue()
