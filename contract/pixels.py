"""The pixels a model is given for an image: upright, RGB, resized and cropped by the model's resize policy.

One function for the service (every request) and the export (reference statistics), so that the statistics describe
what is served: EXIF orientation, JPEG's DCT-domain downscale and transparency on white included. The ONNX graph casts
and normalises, so this stays in uint8 and makes exactly one resized copy.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .metadata import Policy, Preprocessing

SWAPPING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


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


def prepare_image(
    img: Image.Image, pre: Preprocessing, policy: Policy, decode: Callable[[], Image.Image] | None = None
) -> Prepared:
    """An opened (not yet decoded) image → the policy's uint8 pixels; ``decode`` gives the upright RGB image instead
    of Pillow where set (the service's GPU JPEG decoder)."""
    rotated = img.getexif().get(0x0112, 1) in SWAPPING
    original = (img.height, img.width) if rotated else img.size
    size, crop = pre.target(*original, policy)
    if decode is not None:
        img = decode()
    else:
        if img.format == "JPEG":  # DCT-domain downscale, still at least the target size
            img.draft("RGB", (size[1], size[0]) if rotated else size)
        img = to_rgb(ImageOps.exif_transpose(img))
    resized = img.resize(size, Image.BILINEAR)
    left = top = 0
    if crop is not None:
        left, top = (size[0] - crop[0]) // 2, (size[1] - crop[1]) // 2
        resized = resized.crop((left, top, left + crop[0], top + crop[1]))
    return Prepared(np.asarray(resized), original, size, (left, top))
