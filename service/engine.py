"""The inference engine: one worker owns the accelerator and batches requests across clients."""

import logging
import os
from functools import partial

import bentoml
from bentoml.exceptions import ServiceUnavailable

from . import catalog
from .batcher import Batcher, QueueTimeout
from .config import SETTINGS
from .inference import Model, Runner
from .metrics import BATCH_SIZE, INFERENCE_SECONDS

log = logging.getLogger("resnet.engine")


class Engine:
    """One API over lists of uint8 images; the batcher merges the lists of concurrent calls."""

    def __init__(self) -> None:
        threads = SETTINGS.ort_threads or os.cpu_count() or 1
        size = SETTINGS.max_batch_size if SETTINGS.batching else 1
        models = {}
        for tag in SETTINGS.models:
            entry = catalog.load(tag)
            models[entry.name] = Model(
                entry, SETTINGS.providers, threads, SETTINGS.require_gpu, size, tf32=SETTINGS.tf32
            )
        self.runner = Runner(models)
        self.batcher = Batcher(partial(self.runner, on_call=self._observe), size, SETTINGS.max_latency_ms / 1e3)
        warmed = sum(m.warmup() for m in models.values())
        log.warning(
            "engine ready: %d model(s), %d shape buckets warmed, %d threads",
            len(models),
            warmed,
            threads,
        )

    @bentoml.api
    async def infer(self, requests: list[dict]) -> list[dict]:
        try:
            return await self.batcher.submit(requests)
        except QueueTimeout as exc:
            raise ServiceUnavailable(str(exc)) from None

    @staticmethod
    def _observe(model: str, size: int, seconds: float) -> None:
        BATCH_SIZE.labels(model=model).observe(size)
        INFERENCE_SECONDS.labels(model=model).observe(seconds)

    @bentoml.api
    def providers(self) -> dict[str, str]:
        return {name: m.provider for name, m in self.runner.models.items()}


for _i, _tag in enumerate(SETTINGS.models):  # referenced so that `bentoml build` packs each model
    setattr(Engine, f"model_{_i}", bentoml.models.BentoModel(_tag))

# BentoML's client recycles its connection session every `max_requests` calls (default 100) and
# cuts the calls still in flight on the old one: above ~100 concurrent requests they failed with
# "Server disconnected". The session is recycled once a day instead.
Engine = bentoml.service(
    name="resnet-engine",
    workers=1,
    traffic={"timeout": SETTINGS.timeout_s},
    runner_connection={"max_requests": 2**31 - 1, "max_age": 86_400.0},
)(Engine)
