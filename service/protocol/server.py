"""The Open Inference Protocol (KServe v2 REST) over this service's models, whatever carries the bytes.

A tensor model is the raw graph: ``pixels`` (UINT8 [N, H, W, 3]) in; ``logits``, ``embedding`` and
``features`` out, as Triton serving the same ONNX answers. The front adds image models beside them
(service/classifier/image_model.py); the router serves whatever ``Servable`` it is given.
"""

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from contract import ModelMetadata

from ..errors import ApiError, Reply, json_reply, reply
from . import codec
from .tensors import OUTPUTS, Engine, Item

MAX_TENSOR_IMAGES = 1024  # images in one tensor-model request
MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
REPOSITORY = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")


class Servable(Protocol):
    outputs: tuple[str, ...]  # what it can return; a request names some of them, or gets them all

    async def metadata(self) -> dict: ...
    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        """(the ``names`` outputs, response parameters)."""
        ...


class Lifecycle(Protocol):
    """Loads and unloads model versions at run time (service/repository.py's Keeper)."""

    async def load(self, name: str, version: str | None, default: bool) -> object: ...
    async def unload(self, name: str, version: str | None) -> object: ...


@dataclass(frozen=True)
class Table:
    """The servable models: every loaded version of each name, and the version unversioned routes reach."""

    versions: dict[str, dict[str, Servable]]
    defaults: dict[str, str]

    @classmethod
    def of(cls, models: list[tuple[str, str, Servable]], defaults: dict[str, str]) -> "Table":
        """From (name, version, model) triples; a name without a default in ``defaults`` gets its last version."""
        versions: dict[str, dict[str, Servable]] = {}
        for name, version, model in models:
            versions.setdefault(name, {})[version] = model
        chosen = {n: defaults[n] if defaults.get(n) in v else list(v)[-1] for n, v in versions.items()}
        return cls(versions, chosen)

    def find(self, name: str, version: str | None) -> tuple[str, Servable]:
        versions = self.versions.get(name, {})
        version = version or self.defaults.get(name)
        if version not in versions:
            loaded = ", ".join(f"{n} ({', '.join(v)})" for n, v in self.versions.items())
            raise ApiError(404, "unknown_model", f"unknown model {name!r} version {version or 'any'}; loaded: {loaded}")
        return version, versions[version]


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
    """The raw graph of one model version, on the engine (in this process or behind another protocol server)."""

    outputs = OUTPUTS

    def __init__(self, tag: str, meta: ModelMetadata, engine: Engine, max_pixels: int) -> None:
        self.tag, self.meta, self.engine, self.max_pixels = tag, meta, engine, max_pixels

    async def metadata(self) -> dict:
        c, k = self.meta.embedding_dim, self.meta.num_classes
        provider = (await self.engine.providers()).get(self.tag)
        return {
            "name": self.meta.name,
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
        results = await self.engine.infer([Item(self.tag, image, names) for image in pixels])
        params = {"model_ms": max(r.model_ms for r in results), "batch_size": max(r.batch_size for r in results)}
        return {o: np.stack([r.outputs[o] for r in results]) for o in names}, params


class Router:
    """Routes a request (method, path, header length, body) to health, metadata, readiness, inference or the
    repository; ``ready`` says whether the models can be served now (the readiness probes follow it). ``table`` is
    replaced whole when the loaded versions change; ``lifecycle`` loads and unloads them."""

    def __init__(
        self, server: str, table: Table, ready: Callable[[], Awaitable[bool]], lifecycle: Lifecycle | None = None
    ) -> None:
        self.server, self.table, self.ready, self.lifecycle = server, table, ready, lifecycle

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
        if (change := REPOSITORY.match(path)) and method == "POST":
            return await self._change(*change.groups(), body)
        match = MODEL.match(path)
        if match is None:
            raise ApiError(404, "no_route", f"no route {method} {path}")
        name, version, action = match.groups()
        table = self.table  # one table for the whole request, whatever is loaded meanwhile
        version, model = table.find(name, version)
        if action is None and method == "GET":
            return json_reply(200, await model.metadata() | {"versions": list(table.versions[name])})
        if action == "/ready" and method == "GET":
            ready = await self.ready()
            return json_reply(200 if ready else 400, {"name": name, "ready": ready})
        if action != "/infer" or method != "POST":
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        return await self._infer(name, version, model, codec.decode(body, header_length, "inputs"))

    async def _infer(
        self, name: str, version: str, model: Servable, decoded: tuple[dict, dict[str, np.ndarray]]
    ) -> Reply:
        request, tensors = decoded
        names, binary = wanted(request, model.outputs)
        outputs, params = await model.infer(request, tensors, names)
        head = {"model_name": name, "model_version": version, "parameters": params}
        if isinstance(request.get("id"), str):
            head["id"] = request["id"]
        data, length = codec.encode(head, "outputs", outputs, binary)
        if length is None:
            return Reply(200, data)
        return Reply(200, data, b"application/octet-stream", [(codec.HEADER.encode(), str(length).encode())])

    def _index(self, body: bytes) -> Reply:
        """Triton's repository index, one entry per loaded version; the request is empty or ``{"ready": bool}``
        (every model listed is ready: a version takes traffic only once warm)."""
        request = _json(body)
        if not isinstance(request, dict) or not isinstance(request.get("ready", True), bool):
            raise ApiError(400, "bad_request", 'the repository index takes an empty body or {"ready": true|false}')
        versions = self.table.versions
        return json_reply(200, [{"name": n, "version": v, "state": "READY"} for n in versions for v in versions[n]])

    async def _change(self, name: str, action: str, body: bytes) -> Reply:
        """Triton's repository load and unload. Parameters: ``version`` (load: the store's latest when absent; unload:
        every version when absent) and, on load, ``default`` (true unless false: unversioned routes switch to it)."""
        if self.lifecycle is None:
            raise ApiError(405, "method_not_allowed", "this server's models are fixed")
        request = _json(body)
        params = parameters(request) if isinstance(request, dict) else {"": None}
        version, default = params.get("version"), params.get("default", True)
        known = {"version", "default"} if action == "load" else {"version", "unload_dependents"}  # tritonclient's
        if set(params) - known or not isinstance(version, str | None) or not isinstance(default, bool):
            detail = f'send an empty body or {{"parameters": {{...}}}} with only {", ".join(sorted(known))}'
            raise ApiError(400, "bad_request", f"{detail} (a model's files come from the model store)")
        if action == "load":
            await self.lifecycle.load(name, version, default)
        else:
            await self.lifecycle.unload(name, version)
        return json_reply(200, {"name": name, "versions": list(self.table.versions.get(name, {}))})


def _json(body: bytes) -> object:
    """A small JSON body; an empty one is ``{}``, and what does not parse is None."""
    try:
        return json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
