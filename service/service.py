"""The public HTTP API: decode and validate images, run the model, label the answers.

Serve with ``bentoml serve service.service:Classifier``. The model runs in this process (the CPU
default: no hop, no serialisation) unless RESNET_ENGINE_URL names an engine server
(``python -m service.engine_server``), which the front then calls over the Open Inference Protocol.
"""

import asyncio
import logging
import time
from pathlib import Path

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from contract.metadata import POLICIES

from . import catalog, connections, routes
from .config import SETTINGS
from .decoders import jpeg_decoder
from .engine import Engine
from .errors import ApiError, EngineUnavailable
from .guard import Guard
from .inference import Item
from .metrics import PREPROCESS_SECONDS, REQUESTS
from .preprocess import Prepared, prepare
from .protocol import ImageModel, Protocol, Reply, TensorModel
from .remote import RemoteEngine
from .render import cam, normalise, overlay_png, peak
from .routes import Upload
from .schemas import BatchClassification, Classification, Embedding, Explanation, Prediction, Timing

log = logging.getLogger("resnet.front")
connections.install(SETTINGS.header_timeout_s, SETTINGS.max_header_bytes)
EVERY_URL = [".*"]  # OpenTelemetry's exclusion list: no spans unless RESNET_TRACING=1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max())
    return z / z.sum()


def _timing(result: dict, pre_ms: float, inf_ms: float) -> Timing:
    return Timing(preprocess_ms=pre_ms, inference_ms=inf_ms, model_ms=result["infer_ms"], batch_size=result["batch"])


class Classifier:
    """Front service: decoding, validation and labels; the engine batches across every client."""

    def __init__(self) -> None:
        self.entries = {e.name: e for e in map(catalog.load, SETTINGS.models)}
        self.heads = {name: e.head()[0] for name, e in self.entries.items()}
        self.default = next(iter(self.entries))
        if SETTINGS.engine_url:
            url, token = SETTINGS.engine_url, SETTINGS.engine_token
            self.engine = RemoteEngine(url, token, SETTINGS.timeout_s, list(self.entries))
            log.warning("front: the engine is remote, at %s", SETTINGS.engine_url)
        else:
            self.engine = Engine(SETTINGS)
        self.protocol = Protocol("resnet-serve", self._protocol_models(), log)
        self.jpeg = jpeg_decoder(SETTINGS.decoder)
        self._ready = False

    def _protocol_models(self) -> dict:
        """The Open Inference Protocol's view: each model's raw graph, and an image model beside it."""
        models: dict = {}
        for name, e in self.entries.items():
            provider = self.engine.models[name].provider if isinstance(self.engine, Engine) else "remote"
            models[name] = TensorModel(name, e.meta, self.engine, provider, SETTINGS.max_pixels)
            models[f"{name}-image"] = ImageModel(f"{name}-image", name, e.meta, self.probabilities, SETTINGS.max_images)
        return models

    async def __is_ready__(self) -> bool:
        """Ready once the engine is: in process, after every model and shape bucket is warm; remote, once it
        says each model is ready (first success cached: a remote engine gone later gets 503 per request)."""
        self._ready = self._ready or await self.engine.ready()
        return self._ready

    @bentoml.on_shutdown
    async def close(self) -> None:
        await self.engine.close()

    # -- request handling shared by every route -------------------------------------------------

    def _resolve(self, model: str | None, policy: str | None, top_k: int | None) -> tuple[catalog.Entry, str]:
        name = model or self.default
        if name not in self.entries:
            raise ApiError(404, "unknown_model", f"model {name!r} is not loaded; loaded: {', '.join(self.entries)}")
        entry = self.entries[name]
        policy = policy or entry.meta.preprocessing.policy
        if policy not in POLICIES:
            raise ApiError(400, "bad_policy", f"policy {policy!r} is not one of {', '.join(POLICIES)}")
        k = entry.meta.num_classes
        if top_k is not None and not 1 <= top_k <= k:
            raise ApiError(400, "bad_top_k", f"top_k must be between 1 and {k}, got {top_k}")
        return entry, policy

    async def _prepare(self, entry: catalog.Entry, policy: str, image: Path) -> tuple[Prepared, float]:
        limits = SETTINGS.limits(entry.meta.min_input_size)
        t = time.perf_counter()
        loop, pre = asyncio.get_running_loop(), entry.meta.preprocessing
        prepared = await loop.run_in_executor(None, prepare, image.read_bytes(), policy, pre, limits, self.jpeg)
        seconds = time.perf_counter() - t
        PREPROCESS_SECONDS.labels(policy=policy).observe(seconds)
        h, w = prepared.pixels.shape[:2]
        REQUESTS.labels(model=entry.name, policy=policy, bucket=f"{h}x{w}").inc()
        return prepared, seconds * 1e3

    async def _infer(self, items: list[Item]) -> tuple[list[dict], float]:
        t = time.perf_counter()
        try:
            results = await self.engine.infer(items)
        except EngineUnavailable as exc:
            log.warning("engine refused %d image(s): %s", len(items), exc)
            detail = "the inference engine is at capacity or restarting; retry shortly"
            raise ApiError(503, "overloaded", detail) from None
        return results, (time.perf_counter() - t) * 1e3

    def _classification(self, entry, policy, prepared: Prepared, result, pre_ms, inf_ms, top_k) -> dict:
        probs = softmax(result["logits"])
        order = np.argsort(-probs)[:top_k]
        labels = entry.meta.labels
        h, w = prepared.pixels.shape[:2]
        return dict(
            model=entry.name,
            policy=policy,
            predictions=[Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in order],
            original_size=prepared.original,
            inferred_size=(w, h),
            timing=_timing(result, pre_ms, inf_ms),
        )

    async def _predict(self, images, top_k, model, policy):
        """(entry, policy, [(prepared, preprocess ms)], engine results, inference ms) for images of one model."""
        entry, policy = self._resolve(model, policy, top_k)
        prepared = await asyncio.gather(*(self._prepare(entry, policy, img) for img in images))
        results, inf_ms = await self._infer([Item(entry.name, p.pixels) for p, _ in prepared])
        return entry, policy, prepared, results, inf_ms

    async def probabilities(self, model: str, policy: str | None, top_k: int, images: list[bytes]):
        """(policy used, class probabilities [N, K]) for encoded images: the Open Inference Protocol's image models."""
        _, policy, _, results, _ = await self._predict([Upload(b) for b in images], top_k, model, policy)
        return policy, np.stack([softmax(r["logits"]) for r in results])

    async def _classify_many(self, images, top_k, model, policy) -> list[Classification]:
        entry, policy, prepared, results, inf_ms = await self._predict(images, top_k, model, policy)
        return [
            Classification(**self._classification(entry, policy, p, r, ms, inf_ms, top_k))
            for (p, ms), r in zip(prepared, results, strict=True)
        ]

    # -- routes: served by the Guard's fast path (routes.py), declared here for BentoML's schema ----

    @bentoml.api
    async def classify(
        self, image: Path, top_k: int = 5, model: str | None = None, policy: str | None = None
    ) -> Classification:
        """Labelled top-k for one image of any size."""
        return (await self._classify_many([image], top_k, model, policy))[0]

    @bentoml.api
    async def classify_batch(
        self, images: list[Path], top_k: int = 5, model: str | None = None, policy: str | None = None
    ) -> BatchClassification:
        """One result per image, in order."""
        if not 1 <= len(images) <= SETTINGS.max_images:
            raise ApiError(400, "bad_batch", f"send 1 to {SETTINGS.max_images} images, got {len(images)}")
        return BatchClassification(results=await self._classify_many(images, top_k, model, policy))

    @bentoml.api
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
        entry, policy = self._resolve(model, policy, top_k)
        k = entry.meta.num_classes
        if class_index is not None and not 0 <= class_index < k:
            raise ApiError(400, "bad_class_index", f"class_index must be in [0, {k}), got {class_index}")
        prepared, pre_ms = await self._prepare(entry, policy, image)
        (result,), inf_ms = await self._infer([Item(entry.name, prepared.pixels, ("logits", "features"))])
        cls = int(result["logits"].argmax()) if class_index is None else class_index
        cam01 = normalise(cam(self.heads[entry.name][cls], result["features"]))
        h, w = prepared.pixels.shape[:2]
        x, y = peak(cam01)
        x, y = x * w / cam01.shape[1], y * h / cam01.shape[0]
        return Explanation(
            **self._classification(entry, policy, prepared, result, pre_ms, inf_ms, top_k),
            class_index=cls,
            class_label=entry.meta.labels[cls],
            peak=prepared.to_original(x, y),
            heatmap_png=overlay_png(prepared.pixels, cam01),
            cam=cam01.round(4).tolist() if include_map else None,
        )

    @bentoml.api
    async def embed(
        self, image: Path, normalize: bool = True, model: str | None = None, policy: str | None = None
    ) -> Embedding:
        """The pooled feature vector (the input of the linear head)."""
        entry, policy = self._resolve(model, policy, None)
        prepared, pre_ms = await self._prepare(entry, policy, image)
        (result,), inf_ms = await self._infer([Item(entry.name, prepared.pixels, ("logits", "embedding"))])
        vec = result["embedding"].astype(np.float64)
        if normalize:
            vec = vec / max(np.linalg.norm(vec), 1e-12)
        return Embedding(model=entry.name, dim=len(vec), normalized=normalize, embedding=vec.tolist(),
                         timing=_timing(result, pre_ms, inf_ms))  # fmt: skip

    @bentoml.api(route="/models")
    async def models(self) -> list[dict]:
        """Each loaded model's metadata, its parity report, and the provider it runs on."""
        providers = await self.engine.providers()
        return [
            {**e.meta.model_dump(mode="json"), "tag": e.tag, "provider": providers.get(name)}
            for name, e in self.entries.items()
        ]


for _i, _tag in enumerate(SETTINGS.models):  # referenced so that `bentoml build` packs each model
    setattr(Classifier, f"model_{_i}", bentoml.models.BentoModel(_tag))

Classifier = bentoml.service(
    name="resnet-classifier",
    workers=SETTINGS.front_workers,
    # The Guard answers the body deadline (408), the request timeout (504) and the concurrency limit (429) as
    # JSON first; BentoML's own timeout, over the whole exchange, is only the backstop.
    traffic={"timeout": SETTINGS.body_timeout_s + SETTINGS.timeout_s + 5},
    logging={"access": {"enabled": SETTINGS.access_log}},  # per-request layers off the hot path unless asked for
    tracing={} if SETTINGS.tracing else {"excluded_urls": EVERY_URL},
)(Classifier)


async def _v2(method: str, path: str, header_length: str | None, body: bytes) -> Reply:
    return await bentoml.get_current_service().protocol(method, path, header_length, body)


async def _get_models(request) -> JSONResponse:
    return JSONResponse(await bentoml.get_current_service().models())


async def _ui(request) -> FileResponse:
    return FileResponse(Path(__file__).with_name("static") / "ui.html", media_type="text/html")


# GET /models (the POST route above is BentoML's convention; people also expect a plain GET) and /ui.
_pages = Starlette(routes=[Route("/models", _get_models, methods=["GET"]), Route("/ui", _ui, methods=["GET"])])
Classifier.mount_asgi_app(_pages, path="/")
Classifier.add_asgi_middleware(Guard, limits=SETTINGS.guard_limits(), token=SETTINGS.api_token,
                               routes=routes.multipart_routes(Classifier), v2=_v2)  # fmt: skip
