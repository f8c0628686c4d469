"""The Open Inference Protocol (KServe v2 REST) over this service's models, whatever carries the bytes.

Two kinds of model answer it. A tensor model is the raw graph: ``pixels`` (UINT8 [N, H, W, 3]) in;
``logits``, ``embedding`` and ``features`` out, as Triton serving the same ONNX answers. An image model
takes encoded images (``images``, BYTES [N], as OpenVINO Model Server does) through the front's own
decoding, limits and resize policy, and returns ``probabilities`` (FP32 [N, K]) and the top-k
``labels`` (BYTES [N, k]); ``top_k`` and ``policy`` are request parameters.
"""

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol as Interface

import numpy as np

from contract import ModelMetadata

from . import oip
from .errors import ApiError, EngineUnavailable
from .inference import OUTPUTS, Item

VERSION = "1"
MAX_TENSOR_IMAGES = 1024  # images in one tensor-model request
MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
HEALTH = ("/v2/health/live", "/v2/health/ready")


class Refused(Exception):
    """Answered ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: tuple = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Model(Interface):
    outputs: tuple[str, ...]  # what it can return; a request names some of them, or gets them all

    def metadata(self) -> dict: ...
    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        """(the ``names`` outputs, response parameters)."""


class Engine(Interface):
    async def infer(self, items: list[Item]) -> list[dict]: ...


def wanted(request: dict, allowed: tuple[str, ...]) -> tuple[tuple[str, ...], set[str]]:
    """(outputs asked for, those to send as binary): all of them when none is named, as Triton does."""
    specs = request.get("outputs")
    everything_binary = bool(parameters(request).get("binary_data_output"))
    if specs is None:
        return allowed, set(allowed) if everything_binary else set()
    if not (isinstance(specs, list) and specs and all(isinstance(s, dict) and s.get("name") in allowed for s in specs)):
        raise Refused(400, f"outputs must name some of {', '.join(allowed)}")
    names = tuple(dict.fromkeys(s["name"] for s in specs))
    binary = {s["name"] for s in specs if everything_binary or parameters(s).get("binary_data")}
    return names, binary


def parameters(spec: dict) -> dict:
    """A request's or tensor's ``parameters``: a JSON object, or nothing."""
    found = spec.get("parameters") or {}
    if not isinstance(found, dict):
        raise Refused(400, "parameters must be a JSON object")
    return found


def _only(tensors: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if set(tensors) != {name}:
        raise Refused(400, f"send one input, {name}: {what}")
    return tensors[name]


async def _infer(engine: Engine, items: list[Item]) -> list[dict]:
    try:
        return await engine.infer(items)
    except EngineUnavailable as exc:
        raise Refused(503, f"overloaded: {exc}", ((b"retry-after", b"1"),)) from None


class TensorModel:
    """The raw graph of one model, on the engine (in this process or behind another protocol server)."""

    outputs = OUTPUTS

    def __init__(self, name: str, meta: ModelMetadata, engine: Engine, provider: str, max_pixels: int) -> None:
        self.name, self.meta, self.engine, self.provider, self.max_pixels = name, meta, engine, provider, max_pixels

    def metadata(self) -> dict:
        c, k = self.meta.embedding_dim, self.meta.num_classes
        return {"name": self.name, "versions": [VERSION], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, k]},
                            {"name": "embedding", "datatype": "FP32", "shape": [-1, c]},
                            {"name": "features", "datatype": "FP32", "shape": [-1, c, -1, -1]}],
                "parameters": {"min_input_size": self.meta.min_input_size, "precision": self.meta.precision,
                               "provider": self.provider}}  # fmt: skip

    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        pixels, side = _only(tensors, "pixels", "UINT8 [N, H, W, 3]"), self.meta.min_input_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise Refused(400, "send one input, pixels: UINT8 [N, H, W, 3]")
        n, h, w, _ = pixels.shape
        if not 1 <= n <= MAX_TENSOR_IMAGES or min(h, w) < side or h * w > self.max_pixels:
            raise Refused(400, f"pixels {list(pixels.shape)}: N from 1 to {MAX_TENSOR_IMAGES}, sides ≥ {side}, "
                               f"at most {self.max_pixels:,} pixels an image")  # fmt: skip
        results = await _infer(self.engine, [Item(self.name, image, names) for image in pixels])
        params = {"model_ms": max(r["infer_ms"] for r in results), "batch_size": max(r["batch"] for r in results)}
        return {o: np.stack([r[o] for r in results]) for o in names}, params


Classify = Callable[[str, str | None, int, list[bytes]], Awaitable[tuple[str, np.ndarray]]]


class ImageModel:
    """Encoded images in, labelled probabilities out, through the same path as ``/classify``."""

    outputs = ("probabilities", "labels")

    def __init__(self, name: str, tensor_model: str, meta: ModelMetadata, classify: Classify, max_images: int) -> None:
        self.name, self.tensor_model, self.meta, self.classify = name, tensor_model, meta, classify
        self.max_images, self.top_k = max_images, min(5, meta.num_classes)  # top_k when a request gives none

    def metadata(self) -> dict:
        k = self.meta.num_classes
        return {"name": self.name, "versions": [VERSION], "platform": "resnet-serve_image",
                "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
                            {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]}],
                "parameters": {"labels": self.meta.labels, "tensor_model": self.tensor_model,
                               "policy": self.meta.preprocessing.policy, "top_k": self.top_k,
                               "request_parameters": ["top_k", "policy"]}}  # fmt: skip

    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        images = _only(tensors, "images", "BYTES [N] of encoded images")
        if images.dtype != object or images.ndim != 1 or not 1 <= len(images) <= self.max_images:
            raise Refused(400, f"images must be BYTES [N], N from 1 to {self.max_images}")
        params = parameters(request)
        top_k, policy = params.get("top_k", self.top_k), params.get("policy")
        if type(top_k) is not int or not isinstance(policy, str | None):
            raise Refused(400, "top_k must be an integer and policy a string")
        try:
            policy, probabilities = await self.classify(self.tensor_model, policy, top_k, [bytes(b) for b in images])
        except ApiError as exc:
            raise Refused(exc.status, exc.detail, ((b"retry-after", b"1"),) if exc.status == 503 else ()) from None
        order = np.argsort(-probabilities, axis=1)[:, :top_k]
        labels = oip.bytes_array([[self.meta.labels[i].encode() for i in row] for row in order])
        outputs = {"probabilities": probabilities.astype(np.float32), "labels": labels}
        return {o: outputs[o] for o in names}, {"policy": policy, "top_k": top_k}


class Protocol:
    """Routes a request (method, path, header length, body) to health, metadata, readiness or inference."""

    def __init__(self, server: str, models: dict[str, Model], log) -> None:
        self.server, self.models, self.log = server, models, log

    async def __call__(self, method: str, path: str, header_length: str | None, body: bytes) -> Reply:
        try:
            return await self._route(method, path, header_length, body)
        except Refused as exc:
            return _json(exc.status, {"error": exc.message}, list(exc.headers))
        except Exception:
            incident = uuid.uuid4().hex[:12]
            self.log.exception("inference failed (request_id %s)", incident)
            return _json(500, {"error": f"internal error; request_id {incident}"})

    async def _route(self, method: str, path: str, header_length: str | None, body: bytes) -> Reply:
        if path in HEALTH and method == "GET":
            return _json(200, {path.rsplit("/", 1)[1]: True})
        if path == "/v2" and method == "GET":
            return _json(200, {"name": self.server, "version": "0.1.0", "extensions": ["binary_tensor_data"]})
        if path == "/v2/repository/index" and method == "POST":
            return self._index(body)
        match = MODEL.match(path)
        if match is None:
            raise Refused(404, f"no route {method} {path}")
        name, version, action = match.groups()
        model = self.models.get(name)
        if model is None or version not in (None, VERSION):
            loaded = ", ".join(self.models)
            raise Refused(404, f"unknown model {name!r} (version {version or 'any'}); loaded: {loaded}")
        if action is None and method == "GET":
            return _json(200, model.metadata())
        if action == "/ready" and method == "GET":
            return _json(200, {"name": name, "ready": True})
        if action != "/infer" or method != "POST":
            raise Refused(405, f"{method} is not allowed on {path}")
        try:
            request, tensors = oip.decode(body, header_length, "inputs")
        except oip.ProtocolError as exc:
            raise Refused(400, str(exc)) from None
        names, binary = wanted(request, model.outputs)
        outputs, params = await model.infer(request, tensors, names)
        head = {"model_name": name, "model_version": VERSION, "parameters": params}
        if isinstance(request.get("id"), str):
            head["id"] = request["id"]
        data, length = oip.encode(head, "outputs", outputs, binary)
        if length is None:
            return Reply(200, data)
        return Reply(200, data, b"application/octet-stream", [(oip.HEADER.encode(), str(length).encode())])

    def _index(self, body: bytes) -> Reply:
        """Triton's repository index; the request is empty or ``{"ready": bool}`` (every model here is ready)."""
        try:
            request = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError, RecursionError):
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("ready", True), bool):
            raise Refused(400, 'the repository index takes an empty body or {"ready": true|false}')
        return _json(200, [{"name": n, "version": VERSION, "state": "READY"} for n in self.models])


def _json(status: int, payload: object, headers: list | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=headers or [])
