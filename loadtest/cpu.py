"""Server CPU time per request, from /proc: steadier than wall-clock on shared machines.

Summed over the server's whole process tree (supervisor, workers, engine) before and after N
requests; the load client's own CPU time is reported beside it, since it shares the machine.
"""

import asyncio
import os
import platform
import statistics
import time
from pathlib import Path

import httpx
import psutil

from contract import cpu_isa, cpu_name
from contract.threads import usable_cpus

TICK = os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    """What every figure is named with: the CPU, its instruction sets and the cores this process may use."""
    return {"cpu": cpu_name(), "isa": cpu_isa(), "cores": usable_cpus(), "python": platform.python_version()}


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    root = psutil.Process(pid)
    return [root.pid, *(p.pid for p in root.children(recursive=True))]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (fields 14 and 15 of /proc/PID/stat); processes gone since count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15, counted after "pid (comm)"
    return total / TICK


async def _drive(url: str, route: str, bodies: list[bytes], concurrency: int, count: int, fields: dict) -> list:
    latencies: list[float] = []
    jobs = iter(range(count))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            for i in jobs:
                t = time.perf_counter()
                files = {"image": ("x.jpg", bodies[i % len(bodies)], "image/jpeg")}
                r = await client.post(f"{url}/{route}", files=files, data=fields)
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1e3)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def cpu_per_request(
    url: str,
    roots: list[int],
    bodies: list[bytes],
    concurrency: int,
    count: int,
    route: str = "classify",
    **fields: str,
) -> dict:
    """Server CPU-ms per request (summed over the trees of ``roots``), the client's, and latency,
    for ``count`` requests after a warm-up."""
    asyncio.run(_drive(url, route, bodies, concurrency, max(50, count // 10), fields))
    pids = [p for root in roots for p in tree(root)]
    server, client, wall = cpu_seconds(pids), time.process_time(), time.perf_counter()
    latencies = asyncio.run(_drive(url, route, bodies, concurrency, count, fields))
    server, client = cpu_seconds(pids) - server, time.process_time() - client
    wall = time.perf_counter() - wall
    return {
        "concurrency": concurrency,
        "requests": count,
        "processes": len(pids),
        "server_cpu_ms": server * 1e3 / count,
        "client_cpu_ms": client * 1e3 / count,
        "p50_ms": statistics.median(latencies),
        "requests_per_s": count / wall,
    }
