"""A hostile-input corpus through real HTTP: each case gets its status and a clear JSON error,
the service stays healthy, and a valid request still succeeds afterwards."""

import gzip
import io
import os
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import IMAGES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]


def enc(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo() -> Image.Image:
    return Image.open(IMAGES / "chelsea.png").convert("RGB")


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A tiny PNG whose header claims 900 megapixels (never decoded)."""
    raw = zlib.compress(b"\x00" * (w // 8 + 1) * 16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)) + chunk(b"IDAT", raw)


def gif_bomb() -> bytes:
    data = bytearray(enc(Image.new("P", (10, 10)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    return bytes(data)


def tiff_bomb() -> bytes:
    return enc(Image.new("1", (20000, 20000)), "TIFF", compression="group4")


def truncated(fmt: str) -> bytes:
    data = enc(photo(), fmt)
    return data[: len(data) // 3]


def corrupt_header() -> bytes:
    data = bytearray(enc(photo(), "JPEG"))
    data[2:60] = bytes(58)  # the markers after SOI are gone: no longer identifiable as JPEG
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (120, 120), c) for c in ("red", "green", "blue")]
    return enc(frames[0], "GIF", save_all=True, append_images=frames[1:])


def palette_transparent() -> bytes:
    return enc(photo().convert("P"), transparency=0)


FILE_CASES = {
    "random bytes": (os.urandom(4096), 415),
    "text": (b"hello, I am a text file", 415),
    "html": (b"<!doctype html><html><body><img src=x></body></html>", 415),
    "json": (b'{"image": "cat.jpg"}', 415),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415),
    "gzip": (gzip.compress(enc(photo())), 415),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 415),
    "empty file": (b"", 400),
    "truncated jpeg": (truncated("JPEG"), 422),
    "truncated png": (truncated("PNG"), 422),
    "corrupt jpeg header": (corrupt_header(), 415),
    "png bomb": (png_bomb(), 413),
    "gif bomb": (gif_bomb(), 413),
    "tiff bomb": (tiff_bomb(), 413),
    "1x1": (enc(Image.new("RGB", (1, 1))), 422),
    "1x10000": (enc(Image.new("RGB", (1, 10000))), 422),
    "10000x30": (enc(Image.new("RGB", (10000, 30))), 422),
    "cmyk jpeg": (enc(photo().convert("CMYK"), "JPEG"), 200),
    "16-bit png": (enc(Image.fromarray(np.asarray(photo().convert("L"), np.uint16) * 257)), 200),
    "palette with transparency": (palette_transparent(), 200),
    "animated gif": (animated_gif(), 200),
    "grayscale": (enc(photo().convert("L")), 200),
    "bilevel": (enc(photo().convert("1")), 200),
    "rgba": (enc(photo().convert("RGBA")), 200),
    "webp": (enc(photo(), "WEBP"), 200),
    "bmp": (enc(photo(), "BMP"), 200),
    "multi-page tiff": (enc(photo(), "TIFF", save_all=True, append_images=[photo()]), 200),
}


def healthy(url: str) -> None:
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    ok = httpx.post(f"{url}/classify", files={"image": ("ok.png", enc(photo()), "image/png")}, timeout=30)
    assert ok.status_code == 200 and ok.json()["predictions"]


def check_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text[:500]
    if status != 200:
        body = r.json()
        assert set(body) == {"error", "detail"} and body["detail"], body
        assert isinstance(body["detail"], str) and "Traceback" not in r.text and "/work/" not in r.text


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_file(url, case: str) -> None:
    data, status = FILE_CASES[case]
    r = httpx.post(f"{url}/classify", files={"image": ("upload.bin", data, "image/jpeg")}, timeout=30)
    check_error(r, status)
    healthy(url)


def test_exif_rotated_equals_upright(url) -> None:
    upright = photo().resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = enc(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    a = httpx.post(f"{url}/classify", files={"image": ("a.jpg", rotated)}, data={"top_k": "6"}).json()
    b = httpx.post(
        f"{url}/classify", files={"image": ("b.jpg", enc(upright, "JPEG", quality=95))}, data={"top_k": "6"}
    ).json()
    assert a["original_size"] == b["original_size"] == [300, 200]
    assert a["predictions"][0]["label"] == b["predictions"][0]["label"]


MANY_FIELDS = {f"f{i}": "x" for i in range(3000)}
REQUEST_CASES = {
    "no body": (dict(), 400),
    "wrong field name": (dict(files={"picture": ("a.png", enc(photo()))}), 400),
    "json instead of multipart": (dict(json={"image": "aGVsbG8="}), 400),
    "wrong content type": (dict(content=enc(photo()), headers={"content-type": "image/png"}), 400),
    "huge filename": (dict(files={"image": ("a" * 5000 + ".png", enc(photo()))}), 400),
    "long filename": (dict(files={"image": ("a" * 200 + ".png", enc(photo()))}), 200),
    "thousands of form fields": (dict(files={"image": ("a.png", enc(photo()))}, data=MANY_FIELDS), 400),
    "image as text (a URL to fetch)": (dict(data={"image": "http://127.0.0.1:1/x.png"}), 400),
    "unknown file field": (dict(files={"image": ("a.png", enc(photo())), "extra": ("b.bin", b"\x89\x00")}), 400),
    "top_k not a number": (dict(files={"image": ("a.png", enc(photo()))}, data={"top_k": "many"}), 400),
    "negative top_k": (dict(files={"image": ("a.png", enc(photo()))}, data={"top_k": "-3"}), 400),
}


@pytest.mark.parametrize("case", sorted(REQUEST_CASES))
def test_hostile_request(url, case: str) -> None:
    kwargs, status = REQUEST_CASES[case]
    r = httpx.post(f"{url}/classify", timeout=30, **kwargs)
    check_error(r, status)
    healthy(url)


def test_repeated_image_fields_use_the_first(url) -> None:
    files = [("image", ("a.png", enc(photo()))), ("image", ("b.png", b"garbage"))]
    r = httpx.post(f"{url}/classify", files=files, timeout=30)
    assert r.status_code in (200, 400)
    if r.status_code == 400:
        check_error(r, 400)
    healthy(url)
