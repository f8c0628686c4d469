"""The inference engine: owns the accelerator and batches images across clients, by model and shape.

It runs inside the front's own process (the CPU default: no hop) or alone behind the Open Inference
Protocol (``python -m service.engine.server``), for GPU hosts and fronts on other machines.
"""

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from .. import catalog
from ..config import Settings
from ..metrics import BATCH_SIZE, IN_FLIGHT, INFERENCE_SECONDS, QUEUED
from ..protocol.batcher import Batcher
from ..protocol.tensors import Item, Result
from . import runtimes
from .runner import Model, Runner
from .sessions import Cuda, Sessions

log = logging.getLogger("resnet.engine")


def _observe(model: str, size: int, seconds: float) -> None:
    BATCH_SIZE.labels(model=model).observe(size)
    INFERENCE_SECONDS.labels(model=model).observe(seconds)


def _queue(queued: int, in_flight: int) -> None:
    QUEUED.set(queued)
    IN_FLIGHT.set(in_flight)


class LocalEngine:
    """Every configured model loaded and warm; ``infer`` merges the items of concurrent callers."""

    def __init__(self, settings: Settings, device: int = 0) -> None:
        started = time.perf_counter()
        threads = settings.ort_threads or os.cpu_count() or 1
        size = settings.max_batch_size if settings.batching else 1
        # the engine's GPU memory budget, shared evenly by its models
        cuda = Cuda(device, settings.tf32, settings.gpu_mem_limit_mb * 2**20 // len(settings.models))
        self.models: dict[str, Model] = {}
        for tag in settings.models:
            entry = catalog.load(tag)
            sessions = Sessions(
                entry,
                settings.providers,
                threads,
                settings.require_gpu,
                size,
                spinning=settings.ort_spinning,
                cuda=cuda,
            )
            self.models[entry.name] = runtimes.load(entry, sessions, settings.runtime, threads)
        self.runner = Runner(self.models, _observe)
        # threads of their own: model calls never queue behind image decoding in the loop's default executor; on a
        # GPU, a second batch in flight overlaps its copies with the first one's compute (Triton's instance count 2)
        depth = settings.batches_in_flight
        self.pool = ThreadPoolExecutor(depth, thread_name_prefix="engine")
        self.batcher = Batcher(self._run, size, settings.max_latency_ms / 1e3, depth, _queue)
        warmed = sum(m.warmup() for m in self.models.values())
        log.warning(
            "engine ready in %.1f s: %d model(s), %d (batch size, shape) pairs warmed, %d threads, spinning %s",
            time.perf_counter() - started,
            len(self.models),
            warmed,
            threads,
            "on" if settings.ort_spinning else "off",
        )

    async def _run(self, items: list[Item]) -> list[Result | Exception]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.runner, items)

    async def infer(self, items: list[Item]) -> list[Result]:
        """Results in item order; raises QueueTimeout when the queue budget runs out first."""
        return await self.batcher.submit(items)

    async def ready(self) -> bool:
        return True  # warm from the start: __init__ ran every shape bucket

    async def close(self) -> None:
        self.pool.shutdown(wait=False)

    async def providers(self) -> dict[str, str]:
        return {name: m.provider for name, m in self.models.items()}
