"""The engine alone, as an Open Inference Protocol (KServe v2) tensor server: for GPU hosts and remote fronts.

    python -m service.engine_server [--host 127.0.0.1] [--port 3001]

Each loaded model takes ``pixels`` (UINT8 [N, H, W, 3]) and returns ``logits``, ``embedding`` and
``features``, in JSON or binary tensors; ``tritonclient`` calls it as it calls Triton, and Triton
serving the same ONNX could stand in for it. It binds loopback unless told otherwise, and refuses
to listen beyond it without RESNET_ENGINE_TOKEN: every call but health then needs
``Authorization: Bearer <token>``, checked before the body is read.
"""

import argparse
import ipaddress
import logging
import re
import sys
import uuid

import numpy as np
import prometheus_client

from . import oip
from .asgi import BodyTooLarge, bearer_ok, header, read_body, send_bytes, send_json
from .batcher import QueueTimeout
from .config import SETTINGS, Settings
from .engine import Engine
from .inference import OUTPUTS, Item

log = logging.getLogger("resnet.engine")
MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
HEALTH = ("/v2/health/live", "/v2/health/ready")
VERSION = "1"


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def metadata(name: str, meta: dict, provider: str) -> dict:
    """Model metadata as the protocol gives it; ``parameters`` adds what a client needs to feed the model."""
    c, k = meta["embedding_dim"], meta["num_classes"]
    return {"name": name, "versions": [VERSION], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, k]},
                        {"name": "embedding", "datatype": "FP32", "shape": [-1, c]},
                        {"name": "features", "datatype": "FP32", "shape": [-1, c, -1, -1]}],
            "parameters": {"min_input_size": meta["min_input_size"], "precision": meta["precision"],
                           "provider": provider}}  # fmt: skip


def wanted(request: dict) -> tuple[tuple[str, ...], set[str]]:
    """(outputs asked for, those to send as binary): all three when none is named, as Triton does."""
    specs = request.get("outputs")
    everything_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    if specs is None:
        return OUTPUTS, set(OUTPUTS) if everything_binary else set()
    if not isinstance(specs, list) or not all(isinstance(s, dict) and s.get("name") in OUTPUTS for s in specs):
        raise Refused(400, f"outputs must name some of {', '.join(OUTPUTS)}")
    names = tuple(s["name"] for s in specs)
    binary = {s["name"] for s in specs if everything_binary or (s.get("parameters") or {}).get("binary_data")}
    return names, binary


class EngineServer:
    """The ASGI app: health, server and model metadata, readiness, inference, Prometheus metrics."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.token = engine, settings.engine_token
        self.max_body, self.max_pixels, self.max_images = settings.engine_max_body_bytes, settings.max_pixels, 1024

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        path, method = scope["path"], scope["method"]
        if not (path in HEALTH or bearer_ok(scope, self.token)):
            return await send_json(send, 401, {"error": "a valid bearer token is required"},
                                   [(b"www-authenticate", b"Bearer")])  # fmt: skip
        try:
            if path in HEALTH and method == "GET":
                return await send_json(send, 200, {path.rsplit("/", 1)[1]: True})
            if path == "/v2" and method == "GET":
                return await send_json(send, 200, {"name": "resnet-serve-engine", "version": "0.1.0",
                                                   "extensions": ["binary_tensor_data"]})  # fmt: skip
            if path == "/metrics" and method == "GET":
                return await send_bytes(send, 200, prometheus_client.generate_latest(),
                                        prometheus_client.CONTENT_TYPE_LATEST.encode())  # fmt: skip
            if match := MODEL.match(path):
                return await self._model(scope, receive, send, *match.groups())
            raise Refused(404, f"no route {method} {path}")
        except Refused as exc:
            await send_json(send, exc.status, {"error": exc.message})

    async def _model(self, scope, receive, send, name: str, version: str | None, action: str | None) -> None:
        model = self.engine.models.get(name)
        if model is None or version not in (None, VERSION):
            loaded = ", ".join(self.engine.models)
            raise Refused(404, f"unknown model {name!r} (version {version or 'any'}); loaded: {loaded}")
        if action is None and scope["method"] == "GET":
            return await send_json(send, 200, metadata(name, model.meta, model.provider))
        if action == "/ready" and scope["method"] == "GET":
            return await send_json(send, 200, {"name": name, "ready": True})
        if action != "/infer" or scope["method"] != "POST":
            raise Refused(405, f"{scope['method']} is not allowed here")
        try:
            body = await read_body(scope, receive, self.max_body)
        except BodyTooLarge:
            raise Refused(413, f"request body exceeds {self.max_body:,} bytes") from None
        if body is None:
            return
        try:
            request, tensors = oip.decode(body, header(scope, oip.HEADER.encode()), "inputs")
        except oip.ProtocolError as exc:
            raise Refused(400, str(exc)) from None
        pixels = self._pixels(tensors, model.meta["min_input_size"])
        names, binary = wanted(request)
        await self._infer(send, name, request, pixels, names, binary)

    def _pixels(self, tensors: dict[str, np.ndarray], min_side: int) -> np.ndarray:
        pixels = tensors.get("pixels")
        if set(tensors) != {"pixels"} or pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise Refused(400, "send one input, pixels: UINT8 [N, H, W, 3]")
        n, h, w, _ = pixels.shape
        if not 1 <= n <= self.max_images or min(h, w) < min_side or h * w > self.max_pixels:
            raise Refused(400, f"pixels {list(pixels.shape)}: N from 1 to {self.max_images}, sides ≥ {min_side}, "
                               f"at most {self.max_pixels:,} pixels an image")  # fmt: skip
        return pixels

    async def _infer(self, send, name: str, request: dict, pixels, names: tuple[str, ...], binary: set[str]) -> None:
        try:
            results = await self.engine.infer([Item(name, image, names) for image in pixels])
        except QueueTimeout as exc:
            return await send_json(send, 503, {"error": f"overloaded: {exc}"}, [(b"retry-after", b"1")])
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("inference failed (request_id %s)", incident)
            return await send_json(send, 500, {"error": f"internal error; request_id {incident}"})
        outputs = {o: np.stack([r[o] for r in results]) for o in names}
        params = {"model_ms": max(r["infer_ms"] for r in results), "batch_size": max(r["batch"] for r in results)}
        head = {"model_name": name, "model_version": VERSION, "parameters": params}
        if isinstance(request.get("id"), str):
            head["id"] = request["id"]
        body, length = oip.encode(head, "outputs", outputs, binary)
        extra = [] if length is None else [(oip.HEADER.encode(), str(length).encode())]
        kind = b"application/json" if length is None else b"application/octet-stream"
        await send_bytes(send, 200, body, kind, extra)

    @staticmethod
    async def _lifespan(receive, send) -> None:
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    if not _loopback(args.host) and not SETTINGS.engine_token:
        parser.error(f"--host {args.host} reaches beyond this machine: set RESNET_ENGINE_TOKEN (a shared secret)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = EngineServer(Engine(SETTINGS), SETTINGS)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_keep_alive=SETTINGS.timeout_s)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
