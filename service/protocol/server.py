"""The Open Inference Protocol (KServe v2 REST) over this service's models, whatever carries the bytes.

A tensor model is the raw graph: ``pixels`` (UINT8 [N, H, W, 3]) in; ``logits``, ``embedding`` and
``features`` out, as Triton serving the same ONNX answers. The front adds image models beside them
(service/classifier/image_model.py); the router serves whatever ``Servable`` it is given.
"""

import json
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

import numpy as np

from contract import ModelMetadata

from ..errors import ApiError, Reply, json_reply, reply
from . import codec
from .tensors import OUTPUTS, Engine, Item

VERSION = "1"
MAX_TENSOR_IMAGES = 1024  # images in one tensor-model request
MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")


class Servable(Protocol):
    outputs: tuple[str, ...]  # what it can return; a request names some of them, or gets them all

    async def metadata(self) -> dict: ...
    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        """(the ``names`` outputs, response parameters)."""
        ...


def wanted(request: dict, allowed: tuple[str, ...]) -> tuple[tuple[str, ...], set[str]]:
    """(outputs asked for, those to send as binary): all of them when none is named, as Triton does."""
    specs = request.get("outputs")
    everything_binary = bool(parameters(request).get("binary_data_output"))
    if specs is None:
        return allowed, set(allowed) if everything_binary else set()
    if not (isinstance(specs, list) and specs and all(isinstance(s, dict) and s.get("name") in allowed for s in specs)):
        raise ApiError(400, "bad_outputs", f"outputs must name some of {', '.join(allowed)}")
    names = tuple(dict.fromkeys(s["name"] for s in specs))
    binary = {s["name"] for s in specs if everything_binary or parameters(s).get("binary_data")}
    return names, binary


def parameters(spec: dict) -> dict:
    """A request's or tensor's ``parameters``: a JSON object, or nothing."""
    found = spec.get("parameters") or {}
    if not isinstance(found, dict):
        raise ApiError(400, "bad_parameters", "parameters must be a JSON object")
    return found


def only(tensors: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    """The request's one input, ``name``."""
    if set(tensors) != {name}:
        raise ApiError(400, "bad_inputs", f"send one input, {name}: {what}")
    return tensors[name]


class TensorModel:
    """The raw graph of one model, on the engine (in this process or behind another protocol server)."""

    outputs = OUTPUTS

    def __init__(self, name: str, meta: ModelMetadata, engine: Engine, max_pixels: int) -> None:
        self.name, self.meta, self.engine, self.max_pixels = name, meta, engine, max_pixels

    async def metadata(self) -> dict:
        c, k = self.meta.embedding_dim, self.meta.num_classes
        provider = (await self.engine.providers()).get(self.name)
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, k]},
                {"name": "embedding", "datatype": "FP32", "shape": [-1, c]},
                {"name": "features", "datatype": "FP32", "shape": [-1, c, -1, -1]},
            ],
            "parameters": {
                "min_input_size": self.meta.min_input_size,
                "precision": self.meta.precision,
                "provider": provider,
            },
        }

    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        pixels, side = only(tensors, "pixels", "UINT8 [N, H, W, 3]"), self.meta.min_input_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise ApiError(400, "bad_inputs", "send one input, pixels: UINT8 [N, H, W, 3]")
        n, h, w, _ = pixels.shape
        if not 1 <= n <= MAX_TENSOR_IMAGES or min(h, w) < side or h * w > self.max_pixels:
            limits = f"N from 1 to {MAX_TENSOR_IMAGES}, sides ≥ {side}, at most {self.max_pixels:,} pixels an image"
            raise ApiError(400, "bad_inputs", f"pixels {list(pixels.shape)}: {limits}")
        results = await self.engine.infer([Item(self.name, image, names) for image in pixels])
        params = {"model_ms": max(r.model_ms for r in results), "batch_size": max(r.batch_size for r in results)}
        return {o: np.stack([r.outputs[o] for r in results]) for o in names}, params


class Router:
    """Routes a request (method, path, header length, body) to health, metadata, readiness or inference;
    ``ready`` says whether the models can be served now (the readiness probes follow it)."""

    def __init__(self, server: str, models: dict[str, Servable], ready: Callable[[], Awaitable[bool]]) -> None:
        self.server, self.models, self.ready = server, models, ready

    async def __call__(self, method: str, path: str, header_length: str | None, body: bytes) -> Reply:
        try:
            return await self._route(method, path, header_length, body)
        except Exception as exc:
            return reply(exc, protocol=True, where=path)

    async def _route(self, method: str, path: str, header_length: str | None, body: bytes) -> Reply:
        if path == "/v2/health/live" and method == "GET":
            return json_reply(200, {"live": True})
        if path == "/v2/health/ready" and method == "GET":
            ready = await self.ready()  # the protocol's "false" is a 4xx
            return json_reply(200 if ready else 400, {"ready": ready})
        if path == "/v2" and method == "GET":
            return json_reply(200, {"name": self.server, "version": "0.1.0", "extensions": ["binary_tensor_data"]})
        if path == "/v2/repository/index" and method == "POST":
            return self._index(body)
        match = MODEL.match(path)
        if match is None:
            raise ApiError(404, "no_route", f"no route {method} {path}")
        name, version, action = match.groups()
        model = self.models.get(name)
        if model is None or version not in (None, VERSION):
            wanted_model, loaded = f"{name!r} (version {version or 'any'})", ", ".join(self.models)
            raise ApiError(404, "unknown_model", f"unknown model {wanted_model}; loaded: {loaded}")
        if action is None and method == "GET":
            return json_reply(200, await model.metadata())
        if action == "/ready" and method == "GET":
            ready = await self.ready()
            return json_reply(200 if ready else 400, {"name": name, "ready": ready})
        if action != "/infer" or method != "POST":
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        return await self._infer(name, model, codec.decode(body, header_length, "inputs"))

    async def _infer(self, name: str, model: Servable, decoded: tuple[dict, dict[str, np.ndarray]]) -> Reply:
        request, tensors = decoded
        names, binary = wanted(request, model.outputs)
        outputs, params = await model.infer(request, tensors, names)
        head = {"model_name": name, "model_version": VERSION, "parameters": params}
        if isinstance(request.get("id"), str):
            head["id"] = request["id"]
        data, length = codec.encode(head, "outputs", outputs, binary)
        if length is None:
            return Reply(200, data)
        return Reply(200, data, b"application/octet-stream", [(codec.HEADER.encode(), str(length).encode())])

    def _index(self, body: bytes) -> Reply:
        """Triton's repository index; the request is empty or ``{"ready": bool}`` (every model here is ready)."""
        try:
            request = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError, RecursionError):
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("ready", True), bool):
            raise ApiError(400, "bad_request", 'the repository index takes an empty body or {"ready": true|false}')
        return json_reply(200, [{"name": n, "version": VERSION, "state": "READY"} for n in self.models])
