"""The GPU JPEG decoder option: Pillow is the logged fallback, and a decoder given is the one used."""

import io
import logging

import numpy as np
import pytest
from PIL import Image, ImageOps

from service.imaging.decoders import jpeg_decoder
from service.imaging.preprocess import prepare
from tests.conftest import IMAGES
from tests.test_preprocess import LIMITS, PRE  # the same policies and limits as the in-process tests


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.open(IMAGES / "chelsea.png").convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_nvimgcodec_without_the_package_falls_back_to_pillow_loudly(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="resnet.front"):
        assert jpeg_decoder("nvimgcodec") is None  # CI and CPU installs have no nvImageCodec
    assert "decoding JPEG with Pillow" in caplog.text
    assert jpeg_decoder("pillow") is None
    with pytest.raises(ValueError, match="pillow or nvimgcodec"):
        jpeg_decoder("libjpeg")


def test_a_jpeg_decoder_given_is_used_and_agrees_with_the_default_path() -> None:
    calls = []

    def full_decode(data: bytes) -> Image.Image:  # another real decoder: Pillow without the DCT draft
        calls.append(len(data))
        return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")

    data = jpeg()
    ours, default = prepare(data, "full", PRE, LIMITS, full_decode), prepare(data, "full", PRE, LIMITS)
    assert calls == [len(data)] and ours.pixels.shape == default.pixels.shape and ours.original == default.original
    assert np.abs(ours.pixels.astype(int) - default.pixels).mean() < 4
