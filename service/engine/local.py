"""The inference engine: owns the accelerator and batches images across clients, by model and shape.

It runs inside the front's own process (the CPU default: no hop) or alone behind the Open Inference
Protocol (``python -m service.engine.server``), for GPU hosts and fronts on other machines.
"""

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from .. import catalog
from ..config import Settings
from ..metrics import BATCH_SIZE, INFERENCE_SECONDS
from ..protocol.batcher import Batcher
from ..protocol.tensors import Item, Result
from .runner import Runner
from .sessions import Sessions

log = logging.getLogger("resnet.engine")


def _observe(model: str, size: int, seconds: float) -> None:
    BATCH_SIZE.labels(model=model).observe(size)
    INFERENCE_SECONDS.labels(model=model).observe(seconds)


class LocalEngine:
    """Every configured model loaded and warm; ``infer`` merges the items of concurrent callers."""

    def __init__(self, settings: Settings, device: int = 0) -> None:
        threads = settings.ort_threads or os.cpu_count() or 1
        size = settings.max_batch_size if settings.batching else 1
        self.models: dict[str, Sessions] = {}
        for tag in settings.models:
            entry = catalog.load(tag)
            self.models[entry.name] = Sessions(
                entry,
                settings.providers,
                threads,
                settings.require_gpu,
                size,
                tf32=settings.tf32,
                spinning=settings.ort_spinning,
                device=device,
            )
        self.runner = Runner(self.models, _observe)
        # its own thread: model calls never queue behind image decoding in the loop's default executor
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="engine")
        self.batcher = Batcher(self._run, size, settings.max_latency_ms / 1e3)
        warmed = sum(m.warmup() for m in self.models.values())
        log.warning(
            "engine ready: %d model(s), %d shape buckets warmed, %d threads, spinning %s",
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
