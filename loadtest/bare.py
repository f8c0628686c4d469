"""The two wires alone, as the front serves them and with none of this project's code: uvicorn (httptools, uvloop)
and grpcio's asyncio server in the same event loop, each answering every inference request with the same small
canned reply. `make bench` drives it with the service's requests (loadtest/wire.py): what each wire costs a server
before any work is done, so that the service's gRPC / HTTP ratio can be read against the wires' own.

    python -m loadtest.bare --port N    (gRPC on RESNET_GRPC_PORT; answers GET /v2/health/ready)
"""

import argparse
import json
import os

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

LOGITS = np.zeros((1, 10), np.float32).tobytes()  # the default model's answer: ten classes
HEAD = json.dumps(
    {
        "model_name": "bare",
        "model_version": "1",
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": len(LOGITS)}}
        ],
    }
).encode()
REPLY_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(HEAD) + len(LOGITS)).encode()),
    (b"inference-header-content-length", str(len(HEAD)).encode()),
]


class Canned(rpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        answer = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
        answer.outputs.add(name="logits", datatype="FP32", shape=[1, 10])
        answer.raw_output_contents.append(LOGITS)
        return answer


async def _grpc(port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_send_message_length", -1)])
    rpc.add_GRPCInferenceServiceServicer_to_server(Canned(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def _lifespan(receive, send) -> None:
    await receive()  # lifespan.startup
    server = await _grpc(int(os.environ["RESNET_GRPC_PORT"]))
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await server.stop(None)
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope, receive, send) -> None:
    """Reads the whole body; the canned reply to every POST, 200 to any GET."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    while (await receive()).get("more_body"):
        pass
    post = scope["method"] == "POST"
    await send({"type": "http.response.start", "status": 200, "headers": REPLY_HEADERS if post else []})
    await send({"type": "http.response.body", "body": HEAD + LOGITS if post else b""})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
