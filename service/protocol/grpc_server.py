"""The Open Inference Protocol over gRPC (KServe's ``inference.GRPCInferenceService``, Triton's repository calls)
and the standard health service (``grpc.health.v1``, for Kubernetes' gRPC probes).

Each call goes straight to the router's typed calls (server.py), so both wires serve the same models, limits and
errors; the token check is the HTTP toolkit's. grpcio's asyncio server runs in the front's event loop, on
RESNET_GRPC_PORT; the messages and the servicer are the ones ``tritonclient.grpc`` ships (no protoc step). Tensors
travel as ``raw_input_contents`` / ``raw_output_contents`` (as tritonclient sends them) or typed ``contents``;
nothing on the wire is code.
"""

import asyncio
import json
import math
import struct
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from ..asgi import is_loopback, token_ok
from ..errors import ApiError, reply
from ..rollout import HEADER, ROUTING_KEY
from . import codec
from .codec import ProtocolError
from .paths import change_refused
from .server import Router

T = TypeVar("T")
SERVICE = "inference.GRPCInferenceService"

CODES = {  # the REST router's statuses as gRPC's
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,  # an image over the pixel limit; oversized messages are grpcio's own
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
CONTENTS = {  # typed contents field of each datatype
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _value(p: pb.InferParameter) -> object:
    return getattr(p, p.WhichOneof("parameter_choice")) if p.WhichOneof("parameter_choice") else None


def _set(p: pb.InferParameter, value: object) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def _typed(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """A tensor sent as typed ``contents``, as raw bytes."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in tensor.contents.bytes_contents)
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        raise ProtocolError(f"tensor {tensor.name!r}: no contents for {tensor.datatype}")
    return np.asarray(getattr(tensor.contents, field), codec.DTYPES[tensor.datatype]).tobytes()


def inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's tensors by name, checked as the REST binary extension's are."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError("raw_input_contents must hold one entry per input")
    tensors = {}
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        codec.check(tensor.name, tensor.datatype, shape)
        if tensor.name in tensors:
            raise ProtocolError(f"tensor {tensor.name!r} appears twice")
        data = raw[i] if raw else _typed(tensor)
        tensors[tensor.name] = codec.from_bytes(tensor.name, tensor.datatype, shape, data)
    return tensors


def header(request: pb.ModelInferRequest) -> dict:
    """The request as the router reads a REST header: ``id``, ``parameters`` and the ``outputs`` named."""
    head: dict = {"id": request.id, "parameters": {k: _value(v) for k, v in request.parameters.items()}}
    if request.outputs:
        head["outputs"] = [{"name": o.name} for o in request.outputs]
    return head


def response(head: dict, outputs: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    """The router's answer with every output as ``raw_output_contents``."""
    answer = pb.ModelInferResponse(model_name=head["model_name"], model_version=head["model_version"])
    answer.id = head.get("id", "")
    for key, value in head["parameters"].items():
        _set(answer.parameters[key], value)
    for name, array in outputs.items():
        answer.outputs.add(name=name, datatype=codec.datatype(array), shape=array.shape)
        answer.raw_output_contents.append(codec.raw(array))
    return answer


def peer_host(peer: str) -> str:
    """The address in grpc's peer string: ``ipv4:127.0.0.1:5000``, ``ipv6:%5B::1%5D:5000``; else ""."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    return rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else ""


class Servicer(rpc.GRPCInferenceServiceServicer):
    """The router's calls behind the same token as HTTP (``authorization: Bearer`` metadata; health exempt), within
    the client's deadline and the request timeout."""

    def __init__(self, router: Router, token: str, timeout_s: float) -> None:
        self.router, self.token, self.timeout_s = router, token, timeout_s

    async def _serve(self, context, call: Callable[[], Awaitable[T]], guarded: bool = True, changes=False) -> T:
        """The call's answer; a refusal or an error ends the call with its gRPC status, the message as details."""
        budget = min(self.timeout_s, context.time_remaining() or math.inf)
        deadline = asyncio.timeout(budget)
        try:
            if guarded:
                self._authorize(context, changes)
            async with deadline:
                return await call()
        except ApiError as exc:
            code, message = CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.detail
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {budget:g} s"
            else:  # logged with a request id, as on HTTP
                code, message = grpc.StatusCode.INTERNAL, json.loads(reply(exc, True, "gRPC").body)["error"]
        await context.abort(code, message)

    def _authorize(self, context, changes: bool) -> None:
        """The token when one is set; without one, loading and unloading models only from this machine."""
        sent = dict(context.invocation_metadata()).get("authorization")
        if not token_ok(None if sent is None else sent.encode(), self.token):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        if changes and (refusal := change_refused(self.token, is_loopback(peer_host(context.peer())))):
            raise ApiError(403, "forbidden", refusal)

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self._serve(context, self.router.ready, guarded=False))

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        ready = await self._serve(context, lambda: self.router.model_ready(request.name, request.version or None))
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**await self._serve(context, self.router.metadata))

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        meta = await self._serve(context, lambda: self.router.model_metadata(request.name, request.version or None))
        tensors = {k: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[k]] for k in ("inputs", "outputs")}
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"], **tensors
        )

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        ROUTING_KEY.set(dict(context.invocation_metadata()).get(HEADER))  # a rollout's sticky key, as on HTTP
        return await self._serve(context, lambda: self._infer(request))

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        name, version = request.model_name, request.model_version or None
        head, outputs, _ = await self.router.infer(name, version, lambda: (header(request), inputs(request)))
        return response(head, outputs)

    async def RepositoryIndex(self, request, context) -> pb.RepositoryIndexResponse:
        index = await self._serve(context, self.router.index)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in index])

    async def RepositoryModelLoad(self, request, context) -> pb.RepositoryModelLoadResponse:
        await self._change(context, request, "load")
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context) -> pb.RepositoryModelUnloadResponse:
        await self._change(context, request, "unload")
        return pb.RepositoryModelUnloadResponse()

    async def _change(self, context, request, action: str) -> None:
        """Triton's load and unload, with the REST call's parameters (``version``, ``default``)."""
        params = {k: _value(v) for k, v in request.parameters.items()}
        await self._serve(context, lambda: self.router.change(request.model_name, action, params), changes=True)


class Health(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1``: the server ("") and the inference service are SERVING while the router is ready (the
    readiness of /v2/health/ready); any other service is unknown. Open, as probes need."""

    def __init__(self, ready: Callable[[], Awaitable[bool]]) -> None:
        self.ready = ready

    async def _status(self, service: str) -> int:
        if service not in ("", SERVICE):
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        ready = await self.ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request, context) -> health_pb2.HealthCheckResponse:
        status = await self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        """The status now, then each change (checked every second), until the client leaves."""
        last = None
        while True:
            if (status := await self._status(request.service)) != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(1)


async def start(router: Router, port: int, token: str, timeout_s: float, max_bytes: int, concurrency: int):
    """A started grpc.aio server on ``port`` (all interfaces, as the HTTP service), which the other front workers
    share (each listens with SO_REUSEPORT; connections are spread over them)."""
    options = [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1),
    ]
    server = grpc.aio.server(maximum_concurrent_rpcs=concurrency, options=options)
    rpc.add_GRPCInferenceServiceServicer_to_server(Servicer(router, token, timeout_s), server)
    health_pb2_grpc.add_HealthServicer_to_server(Health(router.ready), server)
    server.add_insecure_port(f"[::]:{port}")
    await server.start()
    return server
