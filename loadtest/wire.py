"""`make bench`'s wire part: the same Open Inference Protocol requests over HTTP (binary tensors) and over gRPC,
server CPU-ms per request side by side, rounds interleaved, one client at a time.

    python -m loadtest.wire     (alone: prints the table; `make bench` puts it in BENCHMARKS.md)
"""

import statistics
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
    """Median server CPU-ms per request of each (request, wire), over interleaved rounds."""
    home = out / "wire-home"
    _store(home)
    env = {"BENTOML_HOME": str(home), "RESNET_MODELS": f"{MODEL}:latest", "RESNET_RUNTIME": "onnxruntime"}
    with serve("service.service:Classifier", env, out / "wire.log") as url:
        clients = {
            "HTTP (binary tensors)": (triton_http, triton_http.InferenceServerClient(url.split("//")[1])),
            "gRPC": (triton_grpc, triton_grpc.InferenceServerClient(url.grpc)),
        }
        pids, samples = tree(url.pid), {}
        for module, client in clients.values():
            for _, model, inputs in requests_for(module, photo):
                for _ in range(50):  # warm
                    client.infer(model, inputs)
        for _ in range(rounds):
            for wire, (module, client) in clients.items():
                for what, model, inputs in requests_for(module, photo):
                    cost = cpu_ms(pids, lambda m=model, i=inputs, c=client: c.infer(m, i), count)
                    samples.setdefault(what, {}).setdefault(wire, []).append(cost)
    return {what: {wire: statistics.median(v) for wire, v in row.items()} for what, row in samples.items()}


def section(result: dict) -> str:
    rows = "\n".join(
        f"| {what} | {row['HTTP (binary tensors)']:.2f} | {row['gRPC']:.2f} | "
        f"{row['gRPC'] / row['HTTP (binary tensors)']:.2f}× |"
        for what, row in result.items()
    )
    return f"""
## The Open Inference Protocol: HTTP against gRPC

The same requests to the default model through Triton's clients (`tritonclient.http` with binary tensors,
`tritonclient.grpc`), one at a time; server CPU-ms per request (every process of the server, from /proc),
the median of 5 interleaved rounds of 400:

| request | HTTP | gRPC | gRPC / HTTP |
|---|---:|---:|---:|
{rows}
"""


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "reports" / "wire"
    out.mkdir(parents=True, exist_ok=True)
    print(section(measure(out, photos(sizes=(640,))[0])))
