"""Decode any image into uint8 RGB and apply the model's resize policy (``crop`` or ``full``).

The ONNX graph casts and normalises, so this stays in uint8 and makes exactly one resized copy.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from contract.metadata import Policy, Preprocessing

from ..config import Settings
from ..errors import ApiError
from .decoders import Decode

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
Image.MAX_IMAGE_PIXELS = None  # our own pixel limit applies, before decoding


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be (the settings' RESNET_MAX_PIXELS and RESNET_MAX_ASPECT, the model's minimum side)."""

    max_pixels: int  # decoded pixels (width × height), checked from the header
    max_aspect: float
    min_side: int

    @classmethod
    def of(cls, settings: Settings, min_side: int) -> "ImageLimits":
        """The image limits for a model whose smallest valid side is ``min_side``."""
        return cls(settings.max_pixels, settings.max_aspect, min_side)


@dataclass(frozen=True)
class Prepared:
    pixels: np.ndarray  # (H, W, 3) uint8: what the model sees
    original: tuple[int, int]  # (width, height) after EXIF orientation
    resized: tuple[int, int]  # (width, height) before the centre crop, if any
    offset: tuple[int, int]  # (left, top) of the crop within the resized image

    def to_original(self, x: float, y: float) -> tuple[int, int]:
        """A point of the model's input in original image pixels."""
        sx, sy = self.original[0] / self.resized[0], self.original[1] / self.resized[1]
        return int((x + self.offset[0]) * sx), int((y + self.offset[1]) * sy)


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Identify and size-check from the header, before any pixel is decoded."""
    if not data:
        raise ApiError(400, "empty_image", "the image field is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Exception:
        raise ApiError(
            415,
            "unsupported_image",
            f"not a decodable image; accepted formats: {', '.join(FORMATS)}",
        ) from None
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ApiError(413, "image_too_large", f"{w}×{h} exceeds the {limits.max_pixels:,}-pixel limit")
    if w < 1 or h < 1:
        raise ApiError(422, "image_too_small", f"{w}×{h} has no pixels")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Every Pillow mode to RGB: transparency composited on white, 16-bit scaled, CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), "L")
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def prepare(
    data: bytes, policy: Policy, pre: Preprocessing, limits: ImageLimits, jpeg: Decode | None = None
) -> Prepared:
    """Bytes → upright RGB → the policy's uint8 pixels; JPEG through ``jpeg`` when given (decoders.py)."""
    img = open_image(data, limits)
    w, h = img.size
    if max(w, h) / min(w, h) > limits.max_aspect:
        raise ApiError(422, "bad_aspect_ratio", f"{w}×{h} is beyond the 1:{limits.max_aspect:g} aspect limit")
    if min(w, h) < limits.min_side:
        raise ApiError(422, "image_too_small", f"{w}×{h} is below the model's minimum side {limits.min_side}")
    try:
        rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap sides
        original = (h, w) if rotated else (w, h)
        size, crop = pre.target(*original, policy)
        if img.format == "JPEG" and jpeg is not None:
            img = jpeg(data)  # upright already
        else:
            if img.format == "JPEG":  # DCT-domain downscale, still at least the target size
                img.draft("RGB", (size[1], size[0]) if rotated else size)
            img = to_rgb(ImageOps.exif_transpose(img))
        resized = img.resize(size, Image.BILINEAR)
    except Exception:
        raise ApiError(422, "corrupt_image", "the image data is truncated or corrupt") from None
    left = top = 0
    if crop is not None:
        left, top = (size[0] - crop[0]) // 2, (size[1] - crop[1]) // 2
        resized = resized.crop((left, top, left + crop[0], top + crop[1]))
    return Prepared(np.asarray(resized), original, size, (left, top))
