"""Slow uploaders cannot starve the service: 200 clients trickling a body one byte a second hold no
inference capacity, are cut off with 408 at the body deadline, and normal requests go on meanwhile."""

import asyncio
import time

import httpx
import pytest

from tests.server import DEFAULT, import_models, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slow")]
SLOW, DEADLINE_S, LIMIT = 200, 6, 8


async def slow_upload(host: str, port: int) -> bytes:
    """The headers of a 100 kB multipart POST, then one byte a second; what the server answers."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    writer.write(head.encode())
    answer = b""
    try:
        for _ in range(DEADLINE_S * 3):
            writer.write(b"-")
            await writer.drain()
            try:
                answer += await asyncio.wait_for(reader.read(4096), timeout=1)
            except TimeoutError:
                continue
            if answer.rstrip().endswith(b"}"):  # the whole JSON reply is in
                break
    except ConnectionError:
        pass
    writer.close()
    return answer


async def normal_client(url: str, image: bytes, seconds: float) -> list[tuple[int, float]]:
    results = []
    async with httpx.AsyncClient(timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            r = await client.post(f"{url}/classify", files={"image": ("star.png", image, "image/png")})
            results.append((r.status_code, time.monotonic() - t))
    return results


async def scenario(url: str, image: bytes) -> tuple[list[bytes], list[tuple[int, float]]]:
    host, port = url.removeprefix("http://").split(":")
    slow = [asyncio.create_task(slow_upload(host, int(port))) for _ in range(SLOW)]
    await asyncio.sleep(1)  # every slow client has its headers in
    normal = await normal_client(url, image, DEADLINE_S + 2)
    return await asyncio.gather(*slow), normal


def test_slow_uploaders_get_408_and_hold_no_inference_capacity(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    image = (DEFAULT.parents[1] / "docs" / "star.png").read_bytes()
    env = {"RESNET_MAX_CONCURRENCY": str(LIMIT), "RESNET_BODY_TIMEOUT_S": str(DEADLINE_S), "RESNET_MAX_UPLOADS": "512"}
    with serve(tmp_path, tmp_path / "server.log", **env) as url:
        t = time.monotonic()
        answers, normal = asyncio.run(scenario(url, image))
        took = time.monotonic() - t
        after = httpx.post(f"{url}/classify", files={"image": ("star.png", image, "image/png")}, timeout=30)
        assert after.status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200, "healthy afterwards"
    ok = [s for s, d in normal if s == 200 and d < 1]
    print(
        f"{len(normal)} normal requests, {len(ok)} answered 200 in < 1 s; max {max(d for _, d in normal):.2f} s; "
        f"slow: {sum(a.startswith(b'HTTP/1.1 408') for a in answers)} × 408 in {took:.1f} s"
    )
    assert len(normal) >= 20 and len(ok) >= 0.99 * len(normal), normal
    assert all(a.startswith(b"HTTP/1.1 408") and b"body_timeout" in a for a in answers), {a[:40] for a in answers}


def test_a_thousand_idle_connections_leave_normal_requests_alone(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    image = (DEFAULT.parents[1] / "docs" / "star.png").read_bytes()

    async def go(url: str) -> list[tuple[int, float]]:
        host, port = url.removeprefix("http://").split(":")
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(1000)]  # connected, silent
        try:
            return await normal_client(url, image, 4)
        finally:
            for _, writer in idle:
                writer.close()

    with serve(tmp_path, tmp_path / "server.log", RESNET_MAX_CONCURRENCY=str(LIMIT)) as url:
        normal = asyncio.run(go(url))
        assert httpx.get(f"{url}/readyz").status_code == 200
    assert len(normal) >= 20 and all(s == 200 and d < 1 for s, d in normal), normal
