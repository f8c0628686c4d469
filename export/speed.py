"""How fast each exported precision runs here, side by side: the figures a user picks a precision by."""

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from contract.metadata import Speed, cpu_name

from .graph import INPUT
from .parity import images
from .session import session


def median_seconds(fn: Callable[[], object], runs: int = 5, min_time: float = 0.3) -> float:
    """Median over ``runs`` of the mean time per call, each run at least ``min_time`` long."""
    fn()  # warm-up
    results = []
    for _ in range(runs):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_time or n == 0:
            fn()
            n += 1
        results.append(elapsed / n)
    return statistics.median(results)


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


def measure(files: dict[str, Path], size: int, batches: tuple[int, ...] = (1, 8), min_time: float = 0.1) -> Speed:
    """CPU ms per image of every precision at each batch size, interleaved so drift hits all alike."""
    threads = os.cpu_count() or 1
    sessions = {p: session(f, threads=threads) for p, f in files.items()}
    ms: dict[str, list[float]] = {p: [] for p in files}
    for batch in batches:
        x = images((batch, size, size), seed=7)
        for precision, sess in sessions.items():
            seconds = median_seconds(lambda s=sess, x=x: s.run(["logits"], {INPUT: x}), runs=3, min_time=min_time)
            ms[precision].append(round(seconds * 1e3 / batch, 3))
    return Speed(machine=machine(), threads=threads, size=size, batches=list(batches), ms_per_image=ms)


def notes(speed: Speed) -> dict[str, list[str]]:
    """Per precision, a warning for each batch size where it is slower than fp32: nobody should serve it for speed."""
    fp32 = speed.ms_per_image["fp32"]
    out: dict[str, list[str]] = {}
    for precision, ms in speed.ms_per_image.items():
        for batch, a, b in zip(speed.batches, ms, fp32, strict=True):
            if a > b:
                note = f"{precision} is slower than fp32 on this CPU at batch {batch}: {a:.2f} vs {b:.2f} ms/image"
                out.setdefault(precision, []).append(note)
    return out
