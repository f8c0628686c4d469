"""The Open Inference Protocol over gRPC (KServe's ``inference.GRPCInferenceService``, Triton's repository index):
each call is carried to the REST router (server.py), so both wires give the same models, limits and errors.

grpcio's asyncio server in the front's event loop, on RESNET_GRPC_PORT; the messages and the servicer are the
ones ``tritonclient.grpc`` ships (no protoc step). Tensors travel as ``raw_input_contents`` /
``raw_output_contents`` (as tritonclient sends them) or typed ``contents``; nothing on the wire is code.
"""

import asyncio
import hmac
import json
import struct
import urllib.parse

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from ..errors import Reply
from ..http.guard import REPOSITORY, change_refused
from . import codec
from .server import Router

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


class Rejected(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def _raw(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """A tensor sent as typed ``contents``, as the REST binary extension carries it."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in tensor.contents.bytes_contents)
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {tensor.name!r}: no contents for {tensor.datatype}")
    return np.asarray(getattr(tensor.contents, field), codec.DTYPES[tensor.datatype]).tobytes()


def rest_request(request: pb.ModelInferRequest) -> tuple[bytes, str]:
    """(body, header length) of the same request on the REST binary extension, every output as binary."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents must hold one entry per input")
    specs, chunks = [], raw or [_raw(t) for t in request.inputs]
    for tensor, chunk in zip(request.inputs, chunks, strict=True):
        sent = {"binary_data_size": len(chunk)}
        specs.append(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "parameters": sent}
        )
    params = {k: _value(v) for k, v in request.parameters.items()} | {"binary_data_output": True}
    header: dict = {"id": request.id, "parameters": params, "inputs": specs}
    if request.outputs:
        header["outputs"] = [{"name": o.name} for o in request.outputs]
    head = json.dumps(header).encode()
    return head + b"".join(chunks), str(len(head))


def grpc_response(reply: Reply) -> pb.ModelInferResponse:
    """The router's binary reply as ``raw_output_contents``, without decoding the tensors."""
    length = int(dict(reply.headers)[codec.HEADER.encode()])
    head, at = json.loads(reply.body[:length]), length
    response = pb.ModelInferResponse(model_name=head["model_name"], model_version=head["model_version"])
    response.id = head.get("id", "")
    for key, value in head.get("parameters", {}).items():
        _set(response.parameters[key], value)
    for spec in head["outputs"]:
        size = spec["parameters"]["binary_data_size"]
        response.outputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        response.raw_output_contents.append(reply.body[at : at + size])
        at += size
    return response


def _model_path(name: str, version: str, action: str = "") -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + action


class Servicer(rpc.GRPCInferenceServiceServicer):
    """Each call as its REST request to ``router``, behind the same token (``authorization: Bearer`` metadata;
    health exempt, as on HTTP) and the same request timeout."""

    def __init__(self, router: Router, token: str, timeout_s: float) -> None:
        self.router, self.token, self.timeout_s = router, token, timeout_s

    async def _rest(self, context, method: str, path: str, body: bytes = b"", length: str | None = None) -> Reply:
        """The router's reply; a refusal ends the call with its gRPC status, the router's message as details."""
        try:
            if path not in ("/v2/health/live", "/v2/health/ready"):
                self._authorize(context, path)
            reply = await asyncio.wait_for(self.router(method, path, length, body), self.timeout_s)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {self.timeout_s:g} s")
        except Rejected as exc:
            await context.abort(exc.code, str(exc))
        if reply.status >= 400 and not (reply.status == 400 and path.endswith("/ready")):  # not ready is an answer
            error = json.loads(reply.body).get("error", "")
            await context.abort(CODES.get(reply.status, grpc.StatusCode.INTERNAL), error)
        return reply

    def _authorize(self, context, path: str) -> None:
        """The token when one is set; without one, loading and unloading models only from this machine."""
        sent = dict(context.invocation_metadata()).get("authorization", "")
        if self.token and not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
            raise Rejected(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        if refusal := change_refused(path, self.token, peer_host(context.peer())):
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, refusal)

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        await self._rest(context, "GET", "/v2/health/live")
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        reply = await self._rest(context, "GET", "/v2/health/ready")
        return pb.ServerReadyResponse(ready=reply.status == 200)

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        reply = await self._rest(context, "GET", _model_path(request.name, request.version, "/ready"))
        return pb.ModelReadyResponse(ready=reply.status == 200)

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**json.loads((await self._rest(context, "GET", "/v2")).body))

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        meta = json.loads((await self._rest(context, "GET", _model_path(request.name, request.version))).body)
        tensors = {k: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[k]] for k in ("inputs", "outputs")}
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"], **tensors
        )

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        try:
            body, length = rest_request(request)
        except Rejected as exc:
            await context.abort(exc.code, str(exc))
        path = _model_path(request.model_name, request.model_version, "/infer")
        return grpc_response(await self._rest(context, "POST", path, body, length))

    async def RepositoryIndex(self, request, context) -> pb.RepositoryIndexResponse:
        body = json.dumps({"ready": True}).encode() if request.ready else b""
        index = json.loads((await self._rest(context, "POST", "/v2/repository/index", body)).body)
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
        body = json.dumps({"parameters": params}).encode()
        await self._rest(context, "POST", f"{REPOSITORY}{request.model_name}/{action}", body)


def peer_host(peer: str) -> str:
    """The address in grpc's peer string: ``ipv4:127.0.0.1:5000``, ``ipv6:%5B::1%5D:5000``; else ""."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    return rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else ""


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
    server.add_insecure_port(f"[::]:{port}")
    await server.start()
    return server
