"""The GPU JPEG decoder option: Pillow is the logged fallback, and a decoder given is the one used."""

import asyncio
import io
import logging
import threading

import numpy as np
import pytest
from PIL import Image, ImageOps

from service import catalog
from service.classifier.front import Front
from service.config import Settings
from service.imaging.decoders import jpeg_decoder
from service.imaging.preprocess import prepare
from tests.conftest import IMAGES
from tests.server import DEFAULT
from tests.test_preprocess import LIMITS, PRE  # the same policies and limits as the in-process tests


def jpeg(quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.open(IMAGES / "chelsea.png").convert("RGB").save(buf, "JPEG", quality=quality)
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


def test_a_lone_small_image_decodes_on_the_event_loop_and_any_other_in_the_executor() -> None:
    """Decoding on the loop spares two thread hand-offs; a large image (in pixels, or in bytes that a crafted header
    could make slow to read), or one beside others, must not hold it."""
    buf = io.BytesIO()
    Image.open(IMAGES / "chelsea.png").convert("RGB").resize((1400, 931)).save(buf, "JPEG", quality=92)
    small, other, large = jpeg(), jpeg(quality=80), buf.getvalue()
    padded = small[:2] + b"\xff\xfe\x00\x02" * (1 << 17) + small[2:]  # empty comments: a costly header, 512 KiB
    names = {small: "small", other: "other", large: "large", padded: "padded"}
    decoded: list[tuple[str, bool]] = []  # (image, decoded on the loop's thread), in the order decoded

    def recording(data: bytes) -> Image.Image:  # Pillow, noting where it ran
        decoded.append((names[data], threading.current_thread() is threading.main_thread()))
        return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")

    front, entry = Front(None, Settings(), recording), catalog.read("shapes-resnet10:test", DEFAULT)

    async def requests() -> None:
        for data in (small, large, padded):  # one request at a time, one image each
            await front._prepare(entry, "full", data, alone=True)
        await asyncio.gather(*(front._prepare(entry, "full", data, alone=False) for data in (other, small)))
        # two requests at once: the small one arrives while the large one decodes
        await asyncio.gather(*(front._prepare(entry, "full", data, alone=True) for data in (large, small)))

    asyncio.run(requests())
    assert decoded[:3] == [("small", True), ("large", False), ("padded", False)]
    assert set(decoded[3:5]) == {("other", False), ("small", False)}
    assert set(decoded[5:]) == {("large", False), ("small", False)}
