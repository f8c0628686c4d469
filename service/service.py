"""The public service, wired into BentoML: ``bentoml serve service.service:Classifier``.

Where the model runs is chosen per host (RESNET_ENGINES): on a CPU host, in this process (no hop,
measured fastest); on a GPU host, in one engine per GPU that BentoML runs and restarts beside the
front workers (service/engine/service.py); or in an engine server elsewhere (RESNET_ENGINE_URL). The
fronts call an engine over the Open Inference Protocol and then never import onnxruntime. Each API
is declared for BentoML (its OpenAPI schema and clients) and served by the Guard's multipart fast
path (service/http/).
"""

import asyncio
import logging
import os
import secrets
import tempfile
from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from . import catalog
from .classifier.front import Front
from .classifier.image_model import ImageModel
from .classifier.schemas import BatchClassification, Classification, Embedding, Explanation
from .config import SETTINGS, Settings
from .engine.interface import Engine
from .engine.remote import RemoteEngine
from .engine.service import EngineService
from .engine.tensor_model import TensorModel
from .errors import Reply
from .http.guard import Guard, RequestLimits
from .http.internals import cors_options, dependency_url, install_header_deadlines
from .http.routes import Multipart
from .imaging.decoders import jpeg_decoder
from .protocol import grpc_server
from .protocol.server import Router, Servable, Table
from .repository import Desired, Keeper, Repository, split

log = logging.getLogger("resnet.front")
FAST = Multipart(bentoml.get_current_service)  # the APIs the Guard serves from memory


def engine_url(settings: Settings) -> str:
    """RESNET_ENGINE_URL, or the engines' socket beside the fronts; empty where the model runs in this process."""
    return settings.engine_url or (dependency_url(EngineService.name) if settings.engines else "")


def make_engine(settings: Settings, tags: tuple[str, ...], url: str, threads: int) -> Engine:
    """The client of the engine at ``url``; else the engine in this process, on ``threads`` runtime threads."""
    if url:
        log.warning("front: the engine is at %s (%d beside the fronts)", url, settings.engines)
        return RemoteEngine(url, settings.engine_token, settings.timeout_s, tags, settings.max_batch_size)
    from .engine.local import LocalEngine  # onnxruntime: only where the model runs in this process

    return LocalEngine(settings, threads, tags=tags)


class Classifier:
    """Front service: decoding, validation and labels (classifier/); the engine batches across every client."""

    # BentoML starts the engines beside the fronts and restarts them; the fronts call them over the protocol, never
    # through this (which pickles). Declared on every host, so that a Bento built anywhere runs anywhere; with the
    # model in the fronts' processes (RESNET_ENGINES=0) its one worker loads nothing.
    engine_service = bentoml.depends(EngineService)

    @bentoml.on_deployment
    def share_deployment() -> None:
        """Once, before any worker starts (fronts and engines inherit these): a fresh engine secret unless one is
        set, the folder of the desired set of models, and the deployment's own metrics folder (service/metrics.py)."""
        if SETTINGS.engines:
            os.environ.setdefault("RESNET_ENGINE_TOKEN", secrets.token_urlsafe(32))
        os.environ.setdefault("RESNET_STATE_DIR", tempfile.mkdtemp(prefix="resnet-state-"))
        os.environ["RESNET_METRICS_DIR"] = tempfile.mkdtemp(prefix="resnet-metrics-")
        Repository(os.environ["RESNET_STATE_DIR"], "deployment").forget_processes()

    def __init__(self) -> None:
        repository = Repository(SETTINGS.state_dir, "front")
        desired = repository.read(list(SETTINGS.models))
        url = engine_url(SETTINGS)
        self.threads = SETTINGS.thread_plan("front" if url else "in-process")
        self.threads.apply(log)  # before the runtime or numpy's BLAS starts a thread
        self.engine = make_engine(SETTINGS, desired.tags, url, self.threads.runtime)
        self.front = Front(self.engine, SETTINGS, jpeg_decoder(SETTINGS.decoder))
        self.keeper = Keeper(repository, self.prepare, self.apply)
        self.router = Router("resnet-serve", Table({}, {}), self.engine.ready, self.keeper)
        self._serve({tag: catalog.load(tag) for tag in desired.tags}, desired)
        repository.applied(desired)
        self.grpc, self.watching = None, None

    def _serve(self, entries: dict[str, catalog.Entry], desired: Desired) -> None:
        """Route to these versions from now on: each one's raw graph, and an image model beside it."""
        defaults = {name: split(tag)[1] for name, tag in desired.defaults.items()}
        defaults |= {f"{name}-image": version for name, version in defaults.items()}
        models: list[tuple[str, str, Servable]] = []
        for tag, e in entries.items():
            models.append((e.name, e.version, TensorModel(tag, e.meta, self.engine, SETTINGS.max_pixels)))
            models.append((f"{e.name}-image", e.version, ImageModel(tag, e.meta, self.front)))
        table = Table.of(models, defaults)
        front_defaults = {e.name: f"{e.name}:{table.defaults[e.name]}" for e in entries.values()}
        self.front.update(entries, front_defaults, desired.main)
        self.router.table = table

    async def prepare(self, tag: str, default: bool) -> None:
        """A version about to be loaded: its metadata meets the contract, and the engine has it warm."""
        catalog.load(tag)
        await self.engine.load(tag, default)

    async def apply(self, desired: Desired) -> None:
        """Serve the desired set: the engine loads and warms what is new first, then the routes switch."""
        entries = {}
        for tag in desired.tags:
            try:
                entries[tag] = self.front.entries.get(tag) or catalog.load(tag)
            except Exception as exc:  # gone from the store since it was loaded
                log.error("front: %s left out: %s", tag, exc)
        if SETTINGS.engines:  # beside the fronts: every engine has each new version before any front routes to it
            await self.keeper.settled(desired, "engine")
        served = await self.engine.apply(tuple(entries))
        self._serve({tag: entries[tag] for tag in served}, desired)

    @bentoml.on_startup
    async def arm_worker(self) -> None:
        """Before the worker accepts a connection: uvicorn's header deadlines (service/http/internals.py), and
        decoding on the thread plan's executor."""
        install_header_deadlines(SETTINGS.header_timeout_s, SETTINGS.max_header_bytes)
        asyncio.get_running_loop().set_default_executor(self.threads.executor())

    @bentoml.on_startup
    async def watch_models(self) -> None:
        """Follow the desired set of models that other workers change."""
        self.watching = asyncio.get_running_loop().create_task(self.keeper.watch())

    @bentoml.on_startup
    async def serve_grpc(self) -> None:
        """The protocol over gRPC on RESNET_GRPC_PORT, from every front worker: the kernel spreads the connections
        over them (SO_REUSEPORT), as it does HTTP's. A port another process holds is refused by the pre-flight check."""
        if SETTINGS.grpc_port:
            s = SETTINGS
            self.grpc = await grpc_server.start(
                self.router, s.grpc_port, s.api_token, s.timeout_s, s.max_body_bytes, s.max_concurrency
            )

    async def __is_ready__(self) -> bool:
        """Ready while the engine is: in process, once every model and shape bucket is warm; remote, while it
        answers that each model is ready."""
        return await self.engine.ready()

    @bentoml.on_shutdown
    async def close(self) -> None:
        if self.watching is not None:
            self.watching.cancel()
        if self.grpc is not None:
            await self.grpc.stop(grace=5)
        await self.engine.close()

    @bentoml.api
    @FAST
    async def classify(
        self, image: Path, top_k: int = 5, model: str | None = None, policy: str | None = None
    ) -> Classification:
        """Labelled top-k for one image of any size."""
        return (await self.front.classify([image.read_bytes()], top_k, model, policy))[0]

    @bentoml.api
    @FAST
    async def classify_batch(
        self, images: list[Path], top_k: int = 5, model: str | None = None, policy: str | None = None
    ) -> BatchClassification:
        """One result per image, in order."""
        results = await self.front.classify([i.read_bytes() for i in images], top_k, model, policy)
        return BatchClassification(results=results)

    @bentoml.api
    @FAST
    async def explain(
        self,
        image: Path,
        class_index: int | None = None,
        include_map: bool = False,
        top_k: int = 5,
        model: str | None = None,
        policy: str | None = None,
    ) -> Explanation:
        """Class activation map (Zhou et al., 2016) from the same forward pass as the prediction."""
        return await self.front.explain(image.read_bytes(), class_index, include_map, top_k, model, policy)

    @bentoml.api
    @FAST
    async def embed(
        self, image: Path, normalize: bool = True, model: str | None = None, policy: str | None = None
    ) -> Embedding:
        """The pooled feature vector (the input of the linear head)."""
        return await self.front.embed(image.read_bytes(), normalize, model, policy)

    @bentoml.api(route="/models")
    async def models(self) -> list[dict]:
        """Each loaded model's metadata, its parity report, and the provider it runs on."""
        return await self.front.models()


Classifier = bentoml.service(
    name="resnet-classifier",
    workers=SETTINGS.front_workers,
    # The Guard answers the body deadline (408), the request timeout (504) and the concurrency limit (429) as
    # JSON first; BentoML's own timeout, over the whole exchange, is only the backstop.
    traffic={"timeout": SETTINGS.body_timeout_s + SETTINGS.timeout_s + 5},
    **SETTINGS.request_layers(),
)(Classifier)
Classifier.models.extend(bentoml.models.BentoModel(tag) for tag in SETTINGS.models)  # packed by `bentoml build`


async def _v2(method: str, path: str, header_length: str | None, body: bytes) -> Reply:
    return await bentoml.get_current_service().router(method, path, header_length, body)


async def _get_models(request) -> JSONResponse:
    return JSONResponse(await bentoml.get_current_service().front.models())


async def _ui(request) -> FileResponse:
    return FileResponse(Path(__file__).with_name("static") / "ui.html", media_type="text/html")


def guarded(app) -> Guard:
    """The Guard around BentoML's app, built in the worker, once BentoML's configuration (CORS) is loaded."""
    s = SETTINGS
    limits = RequestLimits(
        max_body_bytes=s.max_body_bytes,
        max_concurrency=s.max_concurrency,
        max_uploads=s.max_uploads,
        body_timeout_s=s.body_timeout_s,
        timeout_s=s.timeout_s,
        max_headers=s.max_headers,
        max_header_bytes=s.max_header_bytes,
    )
    return Guard(app, limits, s.api_token, FAST.routes, _v2, cors_options())


# GET /models (the POST route above is BentoML's convention; people also expect a plain GET) and /ui.
_pages = Starlette(routes=[Route("/models", _get_models, methods=["GET"]), Route("/ui", _ui, methods=["GET"])])
Classifier.mount_asgi_app(_pages, path="/")
Classifier.add_asgi_middleware(guarded)
