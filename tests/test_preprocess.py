"""Decoding and resize policies, in process: every Pillow mode, EXIF orientation, limits, buckets."""

import io

import numpy as np
import pytest
from PIL import Image

from contract import Crop, Full, Preprocessing
from service.errors import ApiError
from service.imaging.preprocess import ImageLimits, prepare

PRE = Preprocessing(
    mean=(0.5,) * 3,
    std=(0.25,) * 3,
    policy="full",
    crop=Crop(resize=146, size=128),
    full=Full(short_side=128, max_long_side=384),
)
LIMITS = ImageLimits(max_pixels=10_000_000, max_aspect=20, min_side=16)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from tests.conftest import IMAGES

    return Image.open(IMAGES / "chelsea.png").convert("RGB")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(photo, mode: str) -> None:
    if mode == "I;16":  # a real 16-bit image uses the full 0–65535 range
        img = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    else:
        img = photo.convert("L").convert(mode) if mode in ("I", "F") else photo.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    out = prepare(encode(img, fmt), "full", PRE, LIMITS)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape[2] == 3
    assert out.pixels.shape[:2] in PRE.buckets()
    assert out.pixels.std() > 10, "content survived the conversion"


def test_transparent_palette_is_composited_on_white() -> None:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    out = prepare(encode(img, transparency=0), "full", PRE, LIMITS)
    assert (out.pixels == 255).all()


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = np.full((64, 64), 32768, np.uint16)
    out = prepare(encode(Image.fromarray(arr)), "full", PRE, LIMITS)
    assert abs(int(out.pixels.mean()) - 127) <= 2


def test_exif_orientation_is_applied(photo) -> None:
    upright = photo.resize((300, 200))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = prepare(encode(stored, "JPEG", exif=exif, quality=95), "full", PRE, LIMITS)
    plain = prepare(encode(upright, "JPEG", quality=95), "full", PRE, LIMITS)
    assert rotated.original == (300, 200) and rotated.pixels.shape == plain.pixels.shape
    assert np.abs(rotated.pixels.astype(int) - plain.pixels).mean() < 6


@pytest.mark.parametrize(
    ("size", "policy", "expected"),
    [
        ((640, 480), "crop", (128, 128)),
        ((480, 640), "full", (128, 160)),
        ((1000, 250), "full", (384, 128)),  # capped at the longest side
        ((129, 127), "full", (128, 128)),
        ((300, 100), "full", (384, 128)),
    ],
)
def test_policy_sizes(size, policy, expected) -> None:
    resize, crop = PRE.target(*size, policy)
    assert (crop or resize) == expected


def test_large_jpeg_uses_draft_mode(photo) -> None:
    big = encode(photo.resize((2400, 1600)), "JPEG", quality=90)
    out = prepare(big, "crop", PRE, LIMITS)
    assert out.original == (2400, 1600) and out.pixels.shape == (128, 128, 3)


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"", 400, "empty_image"),
        (b"<html><body>hi</body></html>", 415, "unsupported_image"),
        (encode(Image.new("RGB", (8, 8))), 422, "image_too_small"),
        (encode(Image.new("RGB", (2000, 50))), 422, "bad_aspect_ratio"),
        (encode(Image.new("L", (5000, 5000))), 413, "image_too_large"),
    ],
)
def test_bad_input_is_a_client_error(data, status, error) -> None:
    with pytest.raises(ApiError) as info:
        prepare(data, "full", PRE, LIMITS)
    assert (info.value.status, info.value.code) == (status, error)


def test_truncated_image_is_422(photo) -> None:
    data = encode(photo, "JPEG")
    with pytest.raises(ApiError) as info:
        prepare(data[: len(data) // 2], "full", PRE, LIMITS)
    assert info.value.status == 422


def test_buckets_cover_both_orientations() -> None:
    shapes = PRE.buckets()
    assert (128, 384) in shapes and (384, 128) in shapes and (128, 128) in shapes
    assert len(shapes) == 17
