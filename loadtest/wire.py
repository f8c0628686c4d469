"""`make bench`'s wire part: the same Open Inference Protocol requests over HTTP (binary tensors) and over gRPC,
server CPU-ms per request side by side, rounds interleaved, one client at a time.

    python -m loadtest.wire     (alone: prints the table; `make bench` puts it in BENCHMARKS.md)
"""

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from .cpu import cpu_seconds, tree
from .drive import photos
from .overhead import DEFAULT, _store
from .server import serve

MODEL = DEFAULT.name
SERVICE, BARE = "the service", "the wires alone"
HTTP, GRPC = "HTTP (binary tensors)", "gRPC"


def requests_for(module, photo: bytes, model: str = MODEL) -> list[tuple[str, str, list]]:
    """(what, model, inputs) in one client library's types: an encoded photo, and the pixels of one image."""
    image = module.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([photo], dtype=object))
    pixels = module.InferInput("pixels", [1, 112, 160, 3], "UINT8")
    pixels.set_data_from_numpy(np.random.default_rng(0).integers(0, 256, (1, 112, 160, 3), dtype=np.uint8))
    return [("image model, one JPEG", f"{model}-image", [image]), ("tensor model, 112×160 pixels", model, [pixels])]


def cpu_ms(pids: list[int], call: Callable[[], object], count: int) -> float:
    before = cpu_seconds(pids)
    for _ in range(count):
        call()
    return (cpu_seconds(pids) - before) * 1e3 / count


def measure(out: Path, photo: bytes, count: int = 400, rounds: int = 5) -> dict:
    """Median server CPU-ms per request of each (server, request, wire), over interleaved rounds: the service, and
    the wires alone (loadtest/bare.py) given the same requests."""
    home = out / "wire-home"
    _store(home)
    env = {"BENTOML_HOME": str(home), "RESNET_MODELS": f"{MODEL}:latest", "RESNET_RUNTIME": "onnxruntime"}
    bare = [sys.executable, "-m", "loadtest.bare"]
    with (
        serve("service.service:Classifier", env, out / "wire.log") as url,
        serve("bare", {}, out / "wire-bare.log", command=bare, ready_path="/v2/health/ready") as alone,
    ):
        servers = {side: (u, tree(u.pid), _clients(u)) for side, u in ((SERVICE, url), (BARE, alone))}
        for _, _, clients in servers.values():
            for module, client in clients.values():
                for _, model, inputs in requests_for(module, photo):
                    for _ in range(50):  # warm
                        client.infer(model, inputs)
        samples: dict = {}
        for _ in range(rounds):
            for side, (_, pids, clients) in servers.items():
                for wire, (module, client) in clients.items():
                    for what, model, inputs in requests_for(module, photo):
                        cost = cpu_ms(pids, lambda m=model, i=inputs, c=client: c.infer(m, i), count)
                        samples.setdefault(side, {}).setdefault(what, {}).setdefault(wire, []).append(cost)
    return {
        side: {what: {wire: statistics.median(v) for wire, v in row.items()} for what, row in found.items()}
        for side, found in samples.items()
    }


def _clients(url) -> dict:
    return {
        HTTP: (triton_http, triton_http.InferenceServerClient(url.split("//")[1])),
        GRPC: (triton_grpc, triton_grpc.InferenceServerClient(url.grpc)),
    }


def targets(result: dict) -> list[tuple[str, float, float]]:
    """#32's: gRPC costs the server no more than HTTP with binary tensors, for the same calls."""
    return [
        (f"gRPC server CPU per request ≤ 1.0× HTTP binary, {what} (HTTP / gRPC)", row[HTTP] / row[GRPC], 1.0)
        for what, row in result[SERVICE].items()
    ]


def section(result: dict) -> str:
    def rows(side: str) -> str:
        return "\n".join(
            f"| {side} | {what} | {row[HTTP]:.2f} | {row[GRPC]:.2f} | {row[GRPC] / row[HTTP]:.2f}× |"
            for what, row in result[side].items()
        )

    gaps = {side: statistics.median(r[GRPC] - r[HTTP] for r in result[side].values()) for side in result}
    return f"""
## The Open Inference Protocol: HTTP against gRPC

The same requests to the default model through Triton's clients (`tritonclient.http` with binary tensors,
`tritonclient.grpc`), one at a time; server CPU-ms per request (every process of the server, from /proc),
the median of 5 interleaved rounds of 400. Beside the service, the wires alone (`loadtest/bare.py`: uvicorn and
grpcio's asyncio server in one event loop, as the front runs them, answering every request with a canned reply):

| server | request | HTTP | gRPC | gRPC / HTTP |
|---|---|---:|---:|---:|
{rows(SERVICE)}
{rows(BARE)}

gRPC costs the service {gaps[SERVICE]:.2f} CPU-ms per request more than HTTP; the wires alone differ by
{gaps[BARE]:.2f} ms before any of this project's code runs.
"""


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "reports" / "wire"
    out.mkdir(parents=True, exist_ok=True)
    print(section(measure(out, photos(sizes=(640,))[0])))
