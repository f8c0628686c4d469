"""One front worker, wired from its settings: the thread plan, the engine (in this process or remote), the front,
the keeper of the desired set of models, the protocol's router, and its gRPC server.

service.py declares the BentoML service around it; each worker process builds one.
"""

import asyncio
import logging

from . import catalog
from .classifier.front import Front
from .classifier.image_model import ImageModel
from .config import Settings
from .engine import addresses
from .engine.interface import Engine
from .engine.remote import RemoteEngine
from .engine.tensor_model import TensorModel
from .http.internals import install_header_deadlines
from .imaging.decoders import jpeg_decoder
from .metrics import MIN_AGREEMENT
from .protocol import grpc_server
from .protocol.server import Router, Servable, Table
from .repository import Desired, Keeper, Repository
from .rollout import Plan

log = logging.getLogger("resnet.front")


def make_engine(settings: Settings, tags: tuple[str, ...], url: str, threads: int) -> Engine:
    """The client of the engine at ``url``; else the engine in this process, on ``threads`` runtime threads."""
    if url:
        log.warning("front: the engine is at %s (%d beside the fronts)", url, settings.engines)
        urls = addresses.parse(url)
        s = settings
        mend_s = s.fleet_mend_s or 2 * s.timeout_s
        return RemoteEngine(urls, s.engine_token, s.timeout_s, tags, s.max_batch_size, s.shadow_max_busy, mend_s)
    from .engine.local import LocalEngine  # onnxruntime: only where the model runs in this process

    return LocalEngine(settings, threads, tags=tags)


class Worker:
    """Serves the desired set of model versions: each one's raw graph, and an image model beside it. ``engine_url``
    is where the engine is, or empty where the model runs in this process."""

    def __init__(self, settings: Settings, engine_url: str) -> None:
        self.settings = settings
        repository = Repository(settings.state_dir, "front")
        desired = repository.read(list(settings.models))
        self.threads = settings.thread_plan("front" if engine_url else "in-process")
        self.threads.apply(log)  # before the runtime or numpy's BLAS starts a thread
        self.engine = make_engine(settings, desired.tags, engine_url, self.threads.runtime)
        self.front = Front(self.engine, settings, jpeg_decoder(settings.decoder))
        self.keeper = Keeper(repository, self.prepare, self.apply)
        self.router = Router("resnet-serve", Table({}, {}), self.engine.ready, self.keeper)
        self._serve({tag: catalog.load(tag) for tag in desired.tags}, desired)
        repository.applied(desired)
        MIN_AGREEMENT.set(settings.min_agreement)
        self.grpc, self.watching = None, []

    def _serve(self, entries: dict[str, catalog.Entry], desired: Desired) -> None:
        """Route to these versions from now on."""
        splits = {name: desired.split(name) for name in desired.defaults}
        splits |= {f"{name}-image": s for name, s in splits.items()}
        models: list[tuple[str, str, Servable]] = []
        for tag, e in entries.items():
            models.append((e.name, e.version, TensorModel(tag, e.meta, self.engine, self.settings.max_pixels)))
            models.append((f"{e.name}-image", e.version, ImageModel(tag, e.meta, self.front)))
        table = Table.of(models, splits)
        if isinstance(self.engine, RemoteEngine):
            self.engine.shared = desired.shared()
        self.front.update(entries, {e.name: table.splits[e.name] for e in entries.values()}, desired.main)
        self.router.table = table

    async def prepare(self, tag: str, default: bool, plan: Plan | None) -> None:
        """A version about to be loaded: its metadata meets the contract, and the engine has it warm."""
        catalog.load(tag)
        await self.engine.load(tag, default, plan)

    async def apply(self, desired: Desired) -> None:
        """Serve the desired set: the engine loads and warms what is new first, then the routes switch."""
        entries = {}
        for tag in desired.tags:
            try:
                entries[tag] = self.front.entries.get(tag) or catalog.load(tag)
            except Exception as exc:  # gone from the store since it was loaded
                log.error("front: %s left out: %s", tag, exc)
        if self.settings.engines:  # beside the fronts: every engine has each new version before a front routes to it
            await self.keeper.settled(desired, "engine")
        served = await self.engine.apply(tuple(entries))
        self._serve({tag: entries[tag] for tag in served}, desired)

    async def start(self) -> None:
        """Before the worker accepts a connection: uvicorn's header deadlines (service/http/internals.py), decoding
        on the thread plan's executor, the desired set followed, and the protocol over gRPC on RESNET_GRPC_PORT from
        every front worker (the kernel spreads the connections over them, as it does HTTP's)."""
        s = self.settings
        install_header_deadlines(s.header_timeout_s, s.max_header_bytes)
        loop = asyncio.get_running_loop()
        loop.set_default_executor(self.threads.executor())
        self.watching = [loop.create_task(self.keeper.watch())]
        if isinstance(self.engine, RemoteEngine):  # a change through another front reaches this one
            self.watching.append(loop.create_task(self.keeper.follow(self.engine.agreed)))
        if s.grpc_port:
            self.grpc = await grpc_server.start(
                self.router, s.grpc_port, s.api_token, s.timeout_s, s.max_body_bytes, s.max_concurrency
            )

    def metrics(self, text: str) -> str:
        """/metrics as this worker serves it: without the series of versions and engines gone for a while."""
        text = self.front.keep_series(text)
        return self.engine.keep_series(text) if isinstance(self.engine, RemoteEngine) else text

    async def close(self) -> None:
        for task in self.watching:
            task.cancel()
        if self.grpc is not None:
            await self.grpc.stop(grace=5)
        await self.engine.close()
