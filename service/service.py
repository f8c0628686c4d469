"""The public service, wired into BentoML: ``bentoml serve service.service:Classifier``.

Where the model runs is chosen per host (RESNET_ENGINES): on a CPU host, in this process (no hop,
measured fastest); on a GPU host, in one engine per GPU that BentoML runs and restarts beside the
front workers, each on a socket of its own (service/engine/service.py); or in engine servers
elsewhere (RESNET_ENGINE_URL). The fronts call the engines over the Open Inference Protocol and then
never import onnxruntime. Each API is declared for BentoML (its OpenAPI schema and clients) and
served by the Guard's multipart fast path (service/http/).
"""

from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from .classifier.schemas import BatchClassification, Classification, Embedding, Explanation
from .config import Settings, engine_socket, share_deployment
from .engine.service import EngineService
from .errors import Reply
from .http.guard import Guard, RequestLimits
from .http.internals import cors_options
from .http.routes import Multipart
from .repository import Repository
from .worker import Worker

DECLARED = Settings()  # what BentoML is told at import: workers, timeouts, request layers


def served() -> "Classifier":
    """This worker's service instance. BentoML builds the ASGI app (the Guard, the pages) apart from the instance it
    creates at start-up; this is the one place they reach it."""
    return bentoml.get_current_service()


FAST = Multipart(served)  # the APIs the Guard serves from memory


def engine_url(settings: Settings) -> str:
    """RESNET_ENGINE_URL, or the socket of each engine beside the fronts (every front worker reaches every engine);
    empty where the model runs in this process."""
    sockets = [f"unix://{engine_socket(index)}" for index in range(settings.engines)]
    return settings.engine_url or ",".join(sockets)


class Classifier:
    """Front service: each worker builds its parts from the settings (service/worker.py); the engine batches across
    every client."""

    # BentoML starts the engines beside the fronts and restarts them; the fronts call them over the protocol, never
    # through this (which pickles). Declared on every host, so that a Bento built anywhere runs anywhere; with the
    # model in the fronts' processes (RESNET_ENGINES=0) its one worker loads nothing.
    engine_service = bentoml.depends(EngineService)

    @bentoml.on_deployment
    def share_deployment() -> None:
        """Once, before any worker starts: what the workers share (config.share_deployment), and no process of an
        earlier deployment left in the desired set's records."""
        share_deployment(Settings().engines)
        Repository(Settings().state_dir, "deployment").forget_processes()

    def __init__(self) -> None:
        settings = Settings()  # from the environment the deployment shared
        self.worker = Worker(settings, engine_url(settings))
        self.front = self.worker.front

    @bentoml.on_startup
    async def start(self) -> None:
        await self.worker.start()

    async def __is_ready__(self) -> bool:
        """Ready while the engine is: in process, once every model and shape bucket is warm; remote, while it
        answers that each model is ready."""
        return await self.worker.engine.ready()

    def __metrics__(self, text: str) -> str:
        return self.worker.metrics(text)

    @bentoml.on_shutdown
    async def close(self) -> None:
        await self.worker.close()

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
    workers=DECLARED.front_workers,
    # The Guard answers the body deadline (408), the request timeout (504) and the concurrency limit (429) as
    # JSON first; BentoML's own timeout, over the whole exchange, is only the backstop.
    traffic={"timeout": DECLARED.body_timeout_s + DECLARED.timeout_s + 5},
    **DECLARED.request_layers(),
)(Classifier)
Classifier.models.extend(bentoml.models.BentoModel(tag) for tag in DECLARED.models)  # packed by `bentoml build`


async def _v2(method: str, path: str, header_length: str | None, body: bytes) -> Reply:
    return await served().worker.router(method, path, header_length, body)


async def _get_models(request) -> JSONResponse:
    return JSONResponse(await served().front.models())


async def _ui(request) -> FileResponse:
    return FileResponse(Path(__file__).with_name("static") / "ui.html", media_type="text/html")


def guarded(app) -> Guard:
    """The Guard around BentoML's app, built in the worker, once BentoML's configuration (CORS) is loaded."""
    s = Settings()
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
