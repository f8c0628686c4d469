"""The Open Inference Protocol (KServe v2) over this service's models, whatever carries the bytes.

The router's typed calls (metadata, readiness, inference, the repository) are what both wires serve: REST
through ``__call__`` here, gRPC through grpc_server.py. It serves whatever ``Servable`` models it is given: the
engine's tensor models (service/engine/tensor_model.py) and the front's image models beside them
(service/classifier/image_model.py).
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from ..errors import ApiError, Reply, json_reply, reply
from ..rollout import Plan, Split
from . import codec
from .paths import CHANGE, HEALTH, INDEX, LIVE, MODEL

SERVER_VERSION, EXTENSIONS = "0.1.0", ["binary_tensor_data"]
LOAD = {"version", "default", "traffic", "shadow", "shadow_rate"}  # a repository load's parameters


class Servable(Protocol):
    outputs: tuple[str, ...]  # what it can return; a request names some of them, or gets them all

    async def metadata(self) -> dict: ...
    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        """(the ``names`` outputs, response parameters)."""
        ...


class Lifecycle(Protocol):
    """Loads and unloads model versions at run time (service/repository.py's Keeper)."""

    async def load(self, name: str, version: str | None, default: bool, plan: Plan | None) -> object: ...
    async def unload(self, name: str, version: str | None) -> object: ...


@dataclass(frozen=True)
class Table:
    """The servable models: every loaded version of each name, and how its unversioned requests are shared among
    them (service/rollout.py: the default, and canaries by weight)."""

    versions: dict[str, dict[str, Servable]]
    splits: dict[str, Split]
    retiring: dict[tuple[str, str], Servable] = field(default_factory=dict)  # unloaded; still answered by version

    @classmethod
    def of(
        cls, models: list[tuple[str, str, Servable]], splits: dict[str, Split], retiring: dict | None = None
    ) -> "Table":
        """From (name, version, model) triples; a name without a served default in ``splits`` gets its last
        version, and canaries not served are left out. ``retiring``: (name, version) → model of versions just
        unloaded, answered when a request names them (a front that has not yet followed the change)."""
        versions: dict[str, dict[str, Servable]] = {}
        for name, version, model in models:
            versions.setdefault(name, {})[version] = model
        chosen = {}
        for name, served in versions.items():
            split = splits.get(name) or Split(list(served)[-1])
            default = split.default if split.default in served else list(served)[-1]
            chosen[name] = replace(split, default=default, canaries=tuple(c for c in split.canaries if c[0] in served))
        return cls(versions, chosen, retiring or {})

    def find(self, name: str, version: str | None) -> tuple[str, Servable]:
        """The version named, or the one this request's share falls to."""
        if (name, version) in self.retiring:
            return version, self.retiring[name, version]
        versions = self.versions.get(name, {})
        version = version or (self.splits[name].pick() if name in self.splits else None)
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


class Router:
    """The protocol's calls on ``table``, which is replaced whole when the loaded versions change; ``ready`` says
    whether the models can be served now (the readiness probes follow it); ``lifecycle`` loads and unloads them."""

    def __init__(
        self, server: str, table: Table, ready: Callable[[], Awaitable[bool]], lifecycle: Lifecycle | None = None
    ) -> None:
        self.server, self.table, self.ready, self.lifecycle = server, table, ready, lifecycle

    async def metadata(self) -> dict:
        return {"name": self.server, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    async def model_metadata(self, name: str, version: str | None) -> dict:
        table = self.table  # one table for the whole request, whatever is loaded meanwhile
        _, model = table.find(name, version)
        return await model.metadata() | {"versions": list(table.versions[name])}

    async def model_ready(self, name: str, version: str | None) -> bool:
        self.table.find(name, version)  # an unknown model is a 404, not "not ready"
        return await self.ready()

    async def infer(
        self, name: str, version: str | None, read: Callable[[], tuple[dict, dict[str, np.ndarray]]]
    ) -> tuple[dict, dict[str, np.ndarray], set[str]]:
        """(the response's header, its outputs, those the request wants as binary). ``read`` gives the request's
        header and tensors; it is called once the model is found (an unknown model is a 404 before the body is
        parsed)."""
        version, model = self.table.find(name, version)
        request, tensors = read()
        names, binary = wanted(request, model.outputs)
        outputs, params = await model.infer(request, tensors, names)
        head = {"model_name": name, "model_version": version, "parameters": params}
        if isinstance(request.get("id"), str):
            head["id"] = request["id"]
        return head, outputs, binary

    async def index(self) -> list[dict]:
        """Triton's repository index, one entry per loaded version (every model listed is ready: a version takes
        traffic only once warm)."""
        versions = self.table.versions
        return [{"name": n, "version": v, "state": "READY"} for n in versions for v in versions[n]]

    async def change(self, name: str, action: str, params: dict) -> dict:
        """Triton's repository load and unload. Parameters: ``version`` (load: the store's latest when absent; unload:
        every version when absent); on load, ``default`` (true unless false: unversioned routes switch to it), or a
        rollout instead (service/rollout.py: ``traffic``, or ``shadow`` and ``shadow_rate``)."""
        if self.lifecycle is None:
            raise ApiError(405, "method_not_allowed", "this server's models are fixed")
        version, default = params.get("version"), params.get("default", True)
        known = LOAD if action == "load" else {"version", "unload_dependents"}  # tritonclient's
        if set(params) - known or not isinstance(version, str | None) or not isinstance(default, bool):
            detail = f'send an empty body or {{"parameters": {{...}}}} with only {", ".join(sorted(known))}'
            raise ApiError(400, "bad_request", f"{detail} (a model's files come from the model store)")
        if action == "load":
            await self.lifecycle.load(name, version, default, Plan.of(params))
        else:
            await self.lifecycle.unload(name, version)
        return {"name": name, "versions": list(self.table.versions.get(name, {}))}

    async def __call__(self, method: str, path: str, header_length: str | None, body: bytes) -> Reply:
        """The REST binding: (method, path, header length, body) to a reply, errors in the protocol's shape."""
        try:
            return await self._route(method, path, header_length, body)
        except Exception as exc:
            return reply(exc, protocol=True, where=path)

    async def _route(self, method: str, path: str, header_length: str | None, body: bytes) -> Reply:
        if path in HEALTH and method == "GET":
            if path == LIVE:
                return json_reply(200, {"live": True})
            ready = await self.ready()  # the protocol's "false" is a 4xx
            return json_reply(200 if ready else 400, {"ready": ready})
        if path == "/v2" and method == "GET":
            return json_reply(200, await self.metadata())
        if path == INDEX and method == "POST":
            request = _json(body)
            if not isinstance(request, dict) or not isinstance(request.get("ready", True), bool):
                raise ApiError(400, "bad_request", 'the repository index takes an empty body or {"ready": true|false}')
            return json_reply(200, await self.index())
        if (change := CHANGE.match(path)) and method == "POST":
            request = _json(body)
            params = parameters(request) if isinstance(request, dict) else {"": None}
            return json_reply(200, await self.change(*change.groups(), params))
        if (match := MODEL.match(path)) is None:
            raise ApiError(404, "no_route", f"no route {method} {path}")
        return await self._model(method, path, match.groups(), header_length, body)

    async def _model(self, method: str, path: str, route: tuple, length: str | None, body: bytes) -> Reply:
        """A model's routes: ``route`` is (name, version or None, action or None)."""
        name, version, action = route
        if action is None and method == "GET":
            return json_reply(200, await self.model_metadata(name, version))
        if action == "/ready" and method == "GET":
            ready = await self.model_ready(name, version)
            return json_reply(200 if ready else 400, {"name": name, "ready": ready})
        if action != "/infer" or method != "POST":
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        head, outputs, binary = await self.infer(name, version, lambda: codec.decode(body, length, "inputs"))
        data, length = codec.encode(head, "outputs", outputs, binary)
        if length is None:
            return Reply(200, data)
        return Reply(200, data, b"application/octet-stream", [(codec.HEADER.encode(), str(length).encode())])


def _json(body: bytes) -> object:
    """A small JSON body; an empty one is ``{}``, and what does not parse is None."""
    try:
        return json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
