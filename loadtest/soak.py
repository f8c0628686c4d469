"""Soak: thousands of mixed requests; zero errors, and the memory of every service process stays flat.

Used by the CI test (a few thousand requests) and by `make bench` (20,000).
"""

import asyncio
import io
import itertools
from collections import Counter
from pathlib import Path

import httpx
import psutil
from PIL import Image


def service_processes(home: Path) -> list[psutil.Process]:
    """Every process of the `bentoml serve` whose model store is ``home``: supervisor, front workers, engine."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "bentoml" in " ".join(p.info["cmdline"] or []) and p.environ().get("BENTOML_HOME") == str(home):
                found.append(p)
        except psutil.Error:  # gone, or not ours
            pass
    return found


def mixed_requests(folder: Path, sides=(64, 150, 333, 640)) -> list[tuple[str, list, dict]]:
    """(route, files, fields) over real photos at several sizes, as PNG and JPEG, both policies."""
    out = []
    for path, side, fmt in itertools.product(sorted(folder.iterdir()), sides, ("PNG", "JPEG")):
        img = Image.open(path).convert("RGB")
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, fmt)
        part = ("x." + fmt.lower(), buf.getvalue(), f"image/{fmt.lower()}")
        policy = "full" if side % 2 else "crop"
        out += [
            ("classify", [("image", part)], {"policy": policy}),
            ("classify_batch", [("images", part)] * 3, {"policy": policy}),
            ("explain", [("image", part)], {"policy": policy}),
        ]
    return out


async def _drive(url: str, bodies: list, count: int, concurrency: int) -> Counter:
    statuses: Counter = Counter()
    jobs = iter(range(count))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            for i in jobs:
                route, files, fields = bodies[i % len(bodies)]
                try:
                    r = await client.post(f"{url}/{route}", files=files, data=fields)
                    statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def soak(url: str, home: Path, bodies: list, requests: int, warmup: int = 300, concurrency: int = 8) -> dict:
    """Warm up, take each process's resident memory, send ``requests`` more, take it again."""
    procs = service_processes(home)
    asyncio.run(_drive(url, bodies, warmup, concurrency))
    before = {p.pid: p.memory_info().rss for p in procs}
    statuses = asyncio.run(_drive(url, bodies, requests, concurrency))
    after = {p.pid: p.memory_info().rss for p in procs}
    growth = {pid: after[pid] / before[pid] - 1 for pid in before}
    return {
        "requests": requests,
        "statuses": dict(statuses),
        "processes": len(procs),
        "rss_mb_before": {pid: b / 2**20 for pid, b in before.items()},
        "max_growth": max(growth.values()),
    }
