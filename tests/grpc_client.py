"""gRPC clients of the Open Inference Protocol against a running server, run as a child of tests/test_grpc.py:
``tritonclient.grpc`` and its protobuf messages cannot share a process with ``kserve``, whose own copy of the
protocol registers the same names (the tests import kserve).

    python -m tests.grpc_client ADDRESS TOKEN IMAGE...   → one JSON object on stdout
    python -m tests.grpc_client lifecycle ADDRESS VERSION
    python -m tests.grpc_client outsider ADDRESS VERSION   (run from another host: a load's refusal)
    python -m tests.grpc_client rollout ADDRESS VERSION KEY...   (a canary by gRPC, and the versions keys reach)
    python -m tests.grpc_client deadline   → the servicer in this process, over a model slower than any deadline
"""

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc
from tritonclient.utils import InferenceServerException

MODEL, STAR = "shapes-resnet10", Path(__file__).parents[1] / "docs" / "star.png"


def refusal(call) -> list[str]:
    """[gRPC status, message] of a call expected to fail."""
    try:
        call()
    except InferenceServerException as exc:
        return [exc.status(), exc.message()]
    except grpc.RpcError as exc:
        return [str(exc.code()), exc.details()]
    return ["OK", ""]


def with_triton(address: str, token: str, images: list[bytes]) -> dict:
    client, auth = triton.InferenceServerClient(address), {"authorization": f"Bearer {token}"}
    blobs = triton.InferInput("images", [len(images)], "BYTES")
    blobs.set_data_from_numpy(np.array(images, dtype=object))
    answer = client.infer(f"{MODEL}-image", [blobs], headers=auth, parameters={"top_k": 2})
    pixels = triton.InferInput("pixels", [2, 112, 144, 3], "UINT8")
    pixels.set_data_from_numpy(np.random.default_rng(0).integers(0, 256, (2, 112, 144, 3), dtype=np.uint8))
    wanted = [triton.InferRequestedOutput("logits")]
    tensor = client.infer(MODEL, [pixels], outputs=wanted, headers=auth)
    garbage = triton.InferInput("images", [1], "BYTES")
    garbage.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(headers=auth, as_json=True),
        "metadata": client.get_model_metadata(f"{MODEL}-image", headers=auth, as_json=True),
        "model_ready": client.is_model_ready(MODEL, headers=auth),
        "index": [m["name"] for m in client.get_model_repository_index(headers=auth, as_json=True)["models"]],
        "probabilities": answer.as_numpy("probabilities").tolist(),
        "labels": answer.as_numpy("labels").astype(str).tolist(),
        "flagged": answer.as_numpy("out_of_distribution").tolist(),
        "outputs": [o["name"] for o in answer.get_response(as_json=True)["outputs"]],
        "logits": tensor.as_numpy("logits").tolist(),
        "tensor_outputs": [o["name"] for o in tensor.get_response(as_json=True)["outputs"]],
        "not_an_image": refusal(lambda: client.infer(f"{MODEL}-image", [garbage], headers=auth)),
        "unknown_model": refusal(lambda: client.infer("nope", [pixels], headers=auth)),
        "no_token": refusal(lambda: client.infer(MODEL, [pixels])),
        "bad_version": refusal(lambda: client.get_model_metadata(MODEL, model_version="7", headers=auth)),
    }


def with_raw_stubs(address: str, token: str, images: list[bytes]) -> dict:
    """The generated stub alone, as grpcurl calls it: images as typed ``contents``, not raw bytes."""
    stub, auth = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(address)), (("authorization", f"Bearer {token}"),)
    tensor = pb.ModelInferRequest.InferInputTensor(name="images", datatype="BYTES", shape=[len(images)])
    tensor.contents.bytes_contents.extend(images)
    request = pb.ModelInferRequest(model_name=f"{MODEL}-image", inputs=[tensor])
    response = stub.ModelInfer(request, metadata=auth, timeout=30)
    (k,) = [o.shape[1] for o in response.outputs if o.name == "probabilities"]
    index = [o.name for o in response.outputs].index("probabilities")
    probabilities = np.frombuffer(response.raw_output_contents[index], np.float32).reshape(-1, k)
    huge = pb.ModelInferRequest(model_name=f"{MODEL}-image", inputs=[tensor], raw_input_contents=[b"\0" * 6 * 2**20])
    return {
        "probabilities": probabilities.tolist(),
        "too_large": refusal(lambda: stub.ModelInfer(huge, metadata=auth, timeout=30)),
        "mismatched_raw": refusal(
            lambda: stub.ModelInfer(
                pb.ModelInferRequest(model_name=MODEL, inputs=[tensor, tensor], raw_input_contents=[b""]),
                metadata=auth,
                timeout=30,
            )
        ),
    }


def health(address: str) -> dict:
    """grpc.health.v1, as a Kubernetes gRPC probe asks it: the server, the inference service, an unknown one."""
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    status = health_pb2.HealthCheckResponse.ServingStatus.Name
    found = {
        s or "server": status(stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=10).status)
        for s in ("", SERVICE)
    }
    found["unknown"] = refusal(lambda: stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10))
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    found["watched"] = status(next(watch).status)
    watch.cancel()
    return found


class Slow:
    """A model that answers after a minute, and notes when its work is called off."""

    outputs = ("logits",)

    def __init__(self) -> None:
        self.stopped: float | None = None

    async def metadata(self) -> dict:
        return {"name": "slow", "platform": "test", "inputs": [], "outputs": []}

    async def infer(self, request, tensors, names):
        try:
            await asyncio.sleep(60)
        finally:
            self.stopped = time.perf_counter()


async def deadline() -> dict:
    """A call with a 0.5 s deadline to a model that takes a minute, behind a 30 s request timeout: when the caller
    hears DEADLINE_EXCEEDED and when the model's work stops; and the health of a server that is not ready."""
    from service.protocol import grpc_server
    from service.protocol.server import Router, Table

    async def not_ready() -> bool:
        return False

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slow = Slow()
    router = Router("test", Table.of([("slow", "1", slow)], {}), not_ready)
    server = await grpc_server.start(router, port, "", 30.0, 2**20, 8)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = pb.ModelInferRequest(model_name="slow")
        started = time.perf_counter()
        try:
            await rpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=0.5)
            heard = "OK"
        except grpc.RpcError as exc:
            heard = str(exc.code())
        answered = time.perf_counter() - started
        await asyncio.sleep(1)
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name((await check).status)
    await server.stop(grace=None)
    stopped = None if slow.stopped is None else slow.stopped - started
    return {"heard": heard, "answered_s": answered, "work_stopped_s": stopped, "health": status}


SERVICE = "inference.GRPCInferenceService"


def change(stub, action: str, version: str, **params: bool | int) -> None:
    """Triton's RepositoryModelLoad or RepositoryModelUnload of one version of MODEL."""
    message = pb.RepositoryModelLoadRequest if action == "load" else pb.RepositoryModelUnloadRequest
    request = message(model_name=MODEL)
    request.parameters["version"].string_param = version
    for key, value in params.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        else:
            request.parameters[key].int64_param = value
    getattr(stub, f"RepositoryModel{action.capitalize()}")(request, timeout=120)


def outsider(address: str, version: str) -> list[str]:
    stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    return refusal(lambda: change(stub, "load", version, default=False))


def lifecycle(address: str, version: str) -> dict:
    """Load ``version`` beside the default, use it by version, unload it; the refusals on the way."""
    stub, client = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(address)), triton.InferenceServerClient(address)
    change(stub, "load", version, default=False)
    pixels = triton.InferInput("pixels", [1, 64, 64, 3], "UINT8")
    pixels.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
    found = {
        "index": [[m["name"], m["version"]] for m in client.get_model_repository_index(as_json=True)["models"]],
        "versions": client.get_model_metadata(MODEL, as_json=True)["versions"],
        "version_ready": client.is_model_ready(MODEL, version),
        "answered_by": client.infer(MODEL, [pixels], model_version=version).get_response().model_version,
        "default_answered_by": client.infer(MODEL, [pixels]).get_response().model_version,
    }
    change(stub, "unload", version)
    found["after"] = client.get_model_metadata(MODEL, as_json=True)["versions"]
    found["last_of_the_default"] = refusal(lambda: client.unload_model(MODEL))
    return found


def rollout(address: str, version: str, *keys: str) -> dict:
    """``version`` made a canary of 20 % over gRPC (and one of 150 % refused); the version each routing key reaches
    on the tensor and the image model, and what a request naming the default reaches whatever its key."""
    stub, client = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(address)), triton.InferenceServerClient(address)
    change(stub, "load", version, traffic=20)
    pixels = triton.InferInput("pixels", [1, 64, 64, 3], "UINT8")
    pixels.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([STAR.read_bytes()], dtype=object))

    def reached(model: str, inputs: list, key: str, **kw: str) -> str:
        return client.infer(model, inputs, headers={"x-routing-key": key}, **kw).get_response().model_version

    default = client.get_model_metadata(MODEL, as_json=True)["versions"][0]
    return {
        "tensor": [reached(MODEL, [pixels], key) for key in keys],
        "image": [reached(f"{MODEL}-image", [images], key) for key in keys],
        "named": [reached(MODEL, [pixels], key, model_version=default) for key in keys],
        "too_much": refusal(lambda: change(stub, "load", version, traffic=150)),
    }


if __name__ == "__main__" and sys.argv[1] == "lifecycle":
    print(json.dumps(lifecycle(*sys.argv[2:])))
elif __name__ == "__main__" and sys.argv[1] == "rollout":
    print(json.dumps(rollout(*sys.argv[2:])))
elif __name__ == "__main__" and sys.argv[1] == "outsider":
    print(json.dumps(outsider(*sys.argv[2:])))
elif __name__ == "__main__" and sys.argv[1] == "deadline":
    print(json.dumps(asyncio.run(deadline())))
elif __name__ == "__main__":
    address, token, *paths = sys.argv[1:]
    blobs = [Path(p).read_bytes() for p in paths]
    found = {"triton": with_triton(address, token, blobs), "raw": with_raw_stubs(address, token, blobs)}
    print(json.dumps(found | {"health": health(address)}))
