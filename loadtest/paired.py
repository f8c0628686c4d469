"""Before and after a change, side by side: another checkout's service and this one's, up at once on the same
model and photos, driven in turn in rounds (the order rotating), so that each ratio is paired within a round.

    python -m loadtest.paired OTHER_CHECKOUT [--model FOLDER] [--rounds 3] [--count 600] [--env KEY=VALUE ...]

Per round and server: server CPU-ms per /classify request at 1 and 8 clients (every process of the server,
from /proc) and its p50 latency, and per Open Inference Protocol request over HTTP (binary tensors) and gRPC, one
client at a time. The figures are medians over the rounds; the ratios are this checkout's over the other's.
"""

import argparse
import statistics
from contextlib import ExitStack
from pathlib import Path

import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

import contract

from .cpu import cpu_per_request, tree
from .drive import photos
from .overhead import DEFAULT
from .server import ROOT, model_home, serve
from .wire import cpu_ms, requests_for

CLIENTS = (1, 8)


def measure_round(url, pids: list[int], bodies: list[bytes], model: str, count: int) -> dict[str, float]:
    """One round's server CPU-ms per request on one server, each measurement named."""
    found = {}
    for c in CLIENTS:
        point = cpu_per_request(url, [url.pid], bodies, c, count)
        found[f"/classify, {c} client(s)"] = point["server_cpu_ms"]
        found[f"/classify p50 ms, {c} client(s)"] = point["p50_ms"]
    for wire, module, client in (
        ("HTTP", triton_http, triton_http.InferenceServerClient(url.split("//")[1])),
        ("gRPC", triton_grpc, triton_grpc.InferenceServerClient(url.grpc)),
    ):
        for what, name, inputs in requests_for(module, bodies[0], model):
            found[f"{what}, {wire}"] = cpu_ms(pids, lambda n=name, i=inputs, c=client: c.infer(n, i), count // 2)
    return found


def compare(other: Path, folder: Path, out: Path, rounds: int, count: int, extra: dict) -> dict[str, dict[str, float]]:
    """Medians per (measurement, checkout) and the paired ratios (this over other); ``extra`` settings for both."""
    name = contract.read(folder).name
    home = model_home(out / "paired-home", folder)
    env = {"BENTOML_HOME": str(home), "RESNET_MODELS": f"{name}:latest", "RESNET_RUNTIME": "onnxruntime", **extra}
    bodies = photos(sizes=(640,))
    samples: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        servers = {
            "before": stack.enter_context(serve("service.service:Classifier", env, out / "paired-before.log", other)),
            "after": stack.enter_context(serve("service.service:Classifier", env, out / "paired-after.log", ROOT)),
        }
        pids = {side: tree(url.pid) for side, url in servers.items()}
        order = list(servers)
        for r in range(rounds):
            for side in order[r % 2 :] + order[: r % 2]:
                for what, ms in measure_round(servers[side], pids[side], bodies, name, count).items():
                    samples.setdefault(what, {}).setdefault(side, []).append(ms)
    return {
        what: {
            "before": statistics.median(row["before"]),
            "after": statistics.median(row["after"]),
            "ratio": statistics.median(a / b for a, b in zip(row["after"], row["before"], strict=True)),
        }
        for what, row in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the other checkout (its service/ is served as 'before')")
    parser.add_argument("--model", type=Path, default=DEFAULT, help="an exported folder (default: the default model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=600, help="requests per /classify measurement")
    parser.add_argument("--env", nargs="*", default=[], help="settings for both, e.g. RESNET_ENGINES=1")
    args = parser.parse_args()
    out = ROOT / "reports" / "paired"
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(kv.split("=", 1) for kv in args.env)
    result = compare(args.other.resolve(), args.model.resolve(), out, args.rounds, args.count, extra)
    print(f"| server CPU-ms per request, or p50 ms | before | after | after / before (median of {args.rounds}) |")
    print("|---|---:|---:|---:|")
    for what, row in result.items():
        print(f"| {what} | {row['before']:.2f} | {row['after']:.2f} | {row['ratio']:.3f}× |")


if __name__ == "__main__":
    main()
