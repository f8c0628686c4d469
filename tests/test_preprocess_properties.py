"""Property tests: any image of any mode and size within the limits becomes a valid bucket tensor."""

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from contract import Crop, Full, Preprocessing
from service.imaging.preprocess import ImageLimits, prepare

PRE = Preprocessing(
    mean=(0.5,) * 3,
    std=(0.25,) * 3,
    policy="full",
    crop=Crop(resize=128, size=112),
    full=Full(short_side=112, max_long_side=336),
)
LIMITS = ImageLimits(max_pixels=4_000_000, max_aspect=20, min_side=16)
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = {
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"},
    "TIFF": set(MODES),
    "JPEG": {"L", "RGB", "CMYK"},
    "WEBP": {"RGB", "RGBA"},
    "BMP": {"1", "L", "P", "RGB"},
    "GIF": {"L", "P"},
}


@st.composite
def images(draw):
    w = draw(st.integers(16, 700))
    h = draw(st.integers(max(16, w // 20 + 1), min(700, w * 20)))
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from([f for f, modes in FORMATS.items() if mode in modes]))
    seed = draw(st.integers(0, 2**16))
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    elif mode in ("I", "F"):
        img = rgb.convert("L").convert(mode)
    else:
        img = rgb.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue(), (w, h)


@settings(max_examples=150, deadline=None)
@given(images(), st.sampled_from(["crop", "full"]))
def test_any_image_becomes_a_bucket_tensor(case, policy) -> None:
    data, size = case
    out = prepare(data, policy, PRE, LIMITS)
    assert out.pixels.dtype == np.uint8 and out.pixels.ndim == 3 and out.pixels.shape[2] == 3
    assert out.pixels.shape[:2] in PRE.buckets()
    assert out.original == size
    if policy == "crop":
        assert out.pixels.shape[:2] == (112, 112)
