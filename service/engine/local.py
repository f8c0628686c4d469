"""The inference engine: owns the accelerator and batches images across clients, by model and shape.

It runs inside the front's own process (the CPU default: no hop) or alone behind the Open Inference
Protocol (``python -m service.engine.server``), for GPU hosts and fronts on other machines.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from .. import catalog
from ..config import Settings
from ..errors import ApiError
from ..metrics import BATCH_SIZE, IN_FLIGHT, INFERENCE_SECONDS, QUEUED
from ..rollout import Plan
from . import runtimes
from .batcher import Batcher
from .interface import Item, Result
from .runner import Model, Runner
from .sessions import Cuda, Sessions

log = logging.getLogger("resnet.engine")


def _observe(tag: str, size: int, seconds: float) -> None:
    name = tag.partition(":")[0]
    BATCH_SIZE.labels(model=name).observe(size)
    INFERENCE_SECONDS.labels(model=name).observe(seconds)


def _queue(queued: int, in_flight: int) -> None:
    QUEUED.set(queued)
    IN_FLIGHT.set(in_flight)


class LocalEngine:
    """Every configured model loaded and warm; ``infer`` merges the items of concurrent callers."""

    def __init__(self, settings: Settings, threads: int, device: int = 0, tags: tuple[str, ...] = ()) -> None:
        started = time.perf_counter()
        tags = tags or settings.models
        self.settings, self.threads = settings, threads  # the process's thread plan's runtime share
        self.size = settings.max_batch_size if settings.batching else 1
        # the engine's GPU memory budget, shared evenly by the models it starts with
        self.cuda = Cuda(device, settings.tf32, settings.gpu_mem_limit_mb * 2**20 // len(tags), settings.cuda_nhwc)
        self.models: dict[str, Model] = {}  # by store tag, name:version
        self.retiring: dict[str, asyncio.TimerHandle] = {}
        warmed = 0
        for tag in tags:
            entry = catalog.load(tag)
            self.models[entry.tag], count = self._open(entry)
            warmed += count
        self.runner = Runner(self.models, _observe)
        # threads of their own: model calls never queue behind image decoding in the loop's default executor; on a
        # GPU, a second batch in flight overlaps its copies with the first one's compute (Triton's instance count 2)
        depth = settings.batches_in_flight
        self.pool = ThreadPoolExecutor(depth, thread_name_prefix="engine")
        budget_s, busy = settings.max_latency_ms / 1e3, settings.shadow_max_busy
        self.batcher = Batcher(self._run, self.size, budget_s, depth, _queue, spare_busy=busy)
        log.warning(
            "engine ready in %.1f s: %d model(s), %d (batch size, shape) pairs warmed, %d threads, spinning %s",
            time.perf_counter() - started,
            len(self.models),
            warmed,
            self.threads,
            "on" if settings.ort_spinning else "off",
        )

    def _open(self, entry: catalog.Entry) -> tuple[Model, int]:
        """The model loaded, checked against its metadata and warmed (Sessions.warm_shapes); the shapes warmed."""
        s = self.settings
        sessions = Sessions(
            entry, s.providers, self.threads, s.require_gpu, self.size, spinning=s.ort_spinning, cuda=self.cuda
        )
        model = runtimes.load(entry, sessions, s.runtime, self.threads)
        return model, model.warmup()

    async def load(self, tag: str, default: bool = True, plan: Plan | None = None) -> None:
        """``tag`` loaded and warm (off the event loop: requests go on meanwhile) before it takes any traffic."""
        if (timer := self.retiring.pop(tag, None)) is not None:
            timer.cancel()
        if tag not in self.models:
            model, warmed = await asyncio.to_thread(self._open, catalog.load(tag))
            self.models[tag] = model
            log.warning("engine: %s loaded, %d (batch size, shape) pairs warmed", tag, warmed)

    async def apply(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """Load what ``tags`` adds, retire what it drops; the tags served now (a model that fails stays out)."""
        for tag in tags:
            try:
                await self.load(tag)
            except Exception as exc:
                log.error("engine: %s cannot be loaded, left out: %s", tag, exc)
        for tag in set(self.models) - set(tags) - set(self.retiring):
            self.retiring[tag] = asyncio.get_running_loop().call_later(self.settings.timeout_s, self._drop, tag)
        return tuple(t for t in tags if t in self.models)

    def _drop(self, tag: str) -> None:
        """A retired model leaves once every request that could still name it has been answered or timed out."""
        self.retiring.pop(tag, None)
        self.models.pop(tag, None)
        log.warning("engine: %s unloaded", tag)

    async def _run(self, items: list[Item]) -> list[Result | Exception]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.runner, items)

    async def infer(self, items: list[Item]) -> list[Result]:
        """Results in item order; raises QueueTimeout when the queue budget runs out first (Dropped for a shadow copy
        that live work displaced); 404 for a version unloaded and retired since the request found it."""
        if gone := {i.model for i in items} - self.models.keys():
            raise ApiError(404, "unknown_model", f"{', '.join(sorted(gone))} is no longer loaded")
        return await self.batcher.submit(items, spare=items[0].shadow)

    async def ready(self) -> bool:
        return True  # warm from the start: __init__ ran every shape bucket

    async def close(self) -> None:
        self.pool.shutdown(wait=False)

    async def providers(self) -> dict[str, str]:
        return {tag: m.provider for tag, m in self.models.items()}
