"""Overload at 6× the front's concurrency limit: excess refused fast, nothing else fails, recovery at once."""

import asyncio
import statistics
import time
from collections import defaultdict

import httpx
import pytest

from tests.server import DEFAULT, import_models, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("overload")]

LIMIT, BUDGET_MS, CLIENTS, SECONDS = 8, 100, 48, 6


async def flood(url: str, image: bytes) -> list[tuple[int, float, httpx.Response]]:
    """CLIENTS clients posting 16-image batches back to back for SECONDS."""
    results = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=CLIENTS)) as client:

        async def one() -> None:
            end = time.monotonic() + SECONDS
            while time.monotonic() < end:
                t = time.monotonic()
                r = await client.post(f"{url}/classify_batch", files=[("images", ("s.png", image, "image/png"))] * 16)
                results.append((r.status_code, time.monotonic() - t, r))

        await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return results


def test_overload_sheds_with_429_and_503_and_recovers_at_once(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    image = (DEFAULT.parents[1] / "docs" / "star.png").read_bytes()
    env = {"RESNET_MAX_CONCURRENCY": str(LIMIT), "RESNET_MAX_LATENCY_MS": str(BUDGET_MS), "RESNET_TIMEOUT_S": "20"}
    with serve(tmp_path, tmp_path / "server.log", **env) as url:
        results = asyncio.run(flood(url, image))
        t = time.monotonic()
        after = httpx.post(f"{url}/classify", files={"image": ("s.png", image, "image/png")}, timeout=30)
        recovery = time.monotonic() - t
        health = httpx.get(f"{url}/readyz", timeout=10).status_code
    seconds = defaultdict(list)
    for status, took, r in results:
        seconds[status].append(took)
        if status != 200:
            assert r.headers["retry-after"] == "1" and set(r.json()) == {"error", "detail"}, r.text
    summary = {s: (len(v), round(statistics.median(v), 3), round(max(v), 3)) for s, v in seconds.items()}
    print(f"status: (count, median s, max s) {summary}; next request {recovery:.3f} s")
    assert set(seconds) <= {200, 429, 503}, f"only 429 (front limit) and 503 (engine queue budget): {summary}"
    assert seconds[200] and seconds[429] and seconds[503], f"accepted and both kinds of refusal seen: {summary}"
    # Refusals are fast: a 429 never reads the body; a 503 comes once the queue budget has passed.
    assert statistics.median(seconds[429]) < statistics.median(seconds[200]), summary
    assert max(seconds[200]) < 10, f"accepted requests keep a bounded latency: {summary}"
    assert after.status_code == 200 and after.json()["predictions"][0]["label"] == "star" and health == 200
    assert recovery < 5, "answers at once when the load stops"
