"""Check any image against the limits from its header, then decode it into the model's uint8 pixels
(contract/pixels.py, the function the export's reference statistics use too)."""

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from contract.metadata import Policy, Preprocessing
from contract.pixels import Prepared, prepare_image

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


def check(data: bytes, limits: ImageLimits) -> Image.Image:
    """The image opened and held to ``limits`` from its header alone (cheap: nothing decoded yet)."""
    img = open_image(data, limits)
    w, h = img.size
    if max(w, h) / min(w, h) > limits.max_aspect:
        raise ApiError(422, "bad_aspect_ratio", f"{w}×{h} is beyond the 1:{limits.max_aspect:g} aspect limit")
    if min(w, h) < limits.min_side:
        raise ApiError(422, "image_too_small", f"{w}×{h} is below the model's minimum side {limits.min_side}")
    return img


def decode(img: Image.Image, data: bytes, policy: Policy, pre: Preprocessing, jpeg: Decode | None = None) -> Prepared:
    """A checked image (``data`` opened) → upright RGB → the policy's uint8 pixels; JPEG through ``jpeg`` when given
    (decoders.py)."""
    own = (lambda: jpeg(data)) if img.format == "JPEG" and jpeg is not None else None  # upright already
    try:
        return prepare_image(img, pre, policy, own)
    except Exception:
        raise ApiError(422, "corrupt_image", "the image data is truncated or corrupt") from None


def prepare(
    data: bytes, policy: Policy, pre: Preprocessing, limits: ImageLimits, jpeg: Decode | None = None
) -> Prepared:
    """Bytes → the policy's uint8 pixels, within ``limits``."""
    return decode(check(data, limits), data, policy, pre, jpeg)
