"""`make bench`'s serving-overhead part: what a request costs the server beyond the work itself.

Server CPU-ms per request (from /proc, summed over every process of the server) for the default
model on real JPEG photos, at 1 and 8 clients, side by side in paired rounds: the in-process floor (decode, resize
and onnxruntime with one thread, no HTTP), the service as `make serve` runs it, the same with
onnxruntime's spinning threads, the GPU host's topology (fronts and an engine that BentoML runs beside
them, forced on CPU), front + engine server over the Open Inference Protocol, and a naive
one-call-per-request BentoML service on the same ONNX. py-spy says where the default's CPU goes.
"""

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from .cpu import cpu_per_request, tree
from .server import serve

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "default_model" / "shapes-resnet10"
PY = sys.executable
# py-spy frames → stage, first match from the innermost frame outwards
STAGES = [
    ("onnxruntime", ("onnxruntime",)),
    ("decode + resize (Pillow)", ("PIL/", "preprocess.py")),
    ("multipart parse", ("forms.py", "python_multipart")),
    ("labels, JSON, metrics (service code)", ("service/", "pydantic", "prometheus_client", "json/")),
    ("HTTP server + ASGI stack", ("uvicorn", "httptools", "starlette", "bentoml", "opentelemetry", "h11")),
    ("event loop, threads", ("asyncio", "anyio", "threading", "concurrent", "queue.py")),
]
WAITING = ("Runner.run", "select", "wait", "Queue.get", "_worker", "poll")  # innermost frames of an idle thread
PY_SPY = Path(sys.executable).with_name("py-spy")
MANAGED = "fronts + an engine beside them, one command (RESNET_ENGINES=1: the GPU host's topology)"


def stage(stack: list[str]) -> str | None:
    """The stage a py-spy sample belongs to, or None when the thread was only waiting."""
    if stack[-1].split(" (")[0].endswith(WAITING):
        return None
    for frame in reversed(stack):
        for name, marks in STAGES:
            if any(m in frame for m in marks):
                return name
    return "other"


def profile(pids: list[int], seconds: int, out: Path) -> dict[str, float]:
    """Share of busy py-spy samples per stage, over every thread of ``pids``."""
    runs = [
        subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "-p",
                str(pid),
                "-d",
                str(seconds),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out / f"py-spy-{pid}.raw"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    for run in runs:
        run.wait()
    counts: collections.Counter = collections.Counter()
    for pid in pids:
        path = out / f"py-spy-{pid}.raw"
        for line in path.read_text().splitlines() if path.is_file() else []:
            stack, _, n = line.rpartition(" ")
            if (name := stage(stack.split(";"))) is not None:
                counts[name] += int(n)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name, _ in [*STAGES, ("other", ())] if counts[name]}


def _store(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    folders = [str(DEFAULT), str(DEFAULT.with_name("shapes-resnet10-int8"))]
    subprocess.run(
        [PY, "-m", "export.store", *folders],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        check=True,
        capture_output=True,
    )


CONFIGS = {  # name → (service, settings beyond onnxruntime's, the engine server's too)
    "in process (make serve)": ("service.service:Classifier", {}, False),
    "in process, onnxruntime threads spinning": ("service.service:Classifier", {"RESNET_ORT_SPINNING": "1"}, False),
    MANAGED: ("service.service:Classifier", {"RESNET_ENGINES": "1"}, False),
    "front + engine server (Open Inference Protocol)": ("service.service:Classifier", {}, True),
    "naive BentoML service, same ONNX": ("loadtest.naive_service:Naive", {"NAIVE_MODEL": str(DEFAULT)}, False),
}


def _floor(out: Path, photo_files: list[Path]) -> float:
    """The in-process floor's CPU-ms per image (``full``), in a process of its own."""
    cmd = [PY, "-m", "service.bench", str(out / "floor.json"), str(DEFAULT), *map(str, photo_files), "--floor-only"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return json.loads((out / "floor.json").read_text())["cpu_floor_ms"]["full"]


def _servers(stack: ExitStack, out: Path, env: dict) -> dict[str, tuple[str, list[int]]]:
    """Every configuration up at once: name → (URL, the process trees its CPU is summed over)."""
    up = {}
    for name, (target, extra, remote) in CONFIGS.items():
        settings, roots = {**env, **extra}, []
        if remote:
            command = [PY, "-m", "service.engine.server"]
            log = out / "overhead-engine.log"
            engine = stack.enter_context(serve("engine", env, log, command=command, ready_path="/v2/health/ready"))
            settings["RESNET_ENGINE_URL"], roots = engine, [engine.pid]
        url = stack.enter_context(serve(target, settings, out / f"overhead-{len(up)}.log"))
        up[name] = (url, [url.pid, *roots])
    return up


def paired(floors: list[float], rounds: dict[str, list[list[dict]]]) -> dict[str, list[dict]]:
    """Each configuration's points, medians over the rounds, with ``x_floor``: the median of each round's server
    CPU-ms over that round's floor (rounds[name][round] holds one point per client count)."""
    rows = {}
    for name, runs in rounds.items():
        rows[name] = []
        for i, first in enumerate(runs[0]):
            points = [run[i] for run in runs]
            row = {k: statistics.median(p[k] for p in points) for k in first if k not in ("concurrency", "processes")}
            ratios = [p["server_cpu_ms"] / f for p, f in zip(points, floors, strict=True)]
            rows[name].append(first | row | {"x_floor": statistics.median(ratios)})
    return rows


def measure(out: Path, photos: list[bytes], photo_files: list[Path], count: int = 1500, rounds: int = 3) -> dict:
    """Every configuration side by side, in rounds: the floor, then each server at 1 and 8 clients (its order
    rotating), so that each ratio to the floor is paired within a round."""
    home = out / "overhead-home"
    _store(home)
    # onnxruntime, as the floor is (OpenVINO beside it: loadtest/runtimes.py)
    env = {"BENTOML_HOME": str(home), "RESNET_PROVIDERS": "CPUExecutionProvider", "RESNET_RUNTIME": "onnxruntime"}
    floors, runs, shares = [], {name: [] for name in CONFIGS}, {}
    with ExitStack() as stack:
        up = _servers(stack, out, env)
        for r in range(rounds):
            floors.append(_floor(out, photo_files))
            for name in [*CONFIGS][r % len(CONFIGS) :] + [*CONFIGS][: r % len(CONFIGS)]:
                url, roots = up[name]
                runs[name].append([cpu_per_request(url, roots, photos, c, count) for c in (1, 8)])
        url, _ = up["in process (make serve)"]
        spy = threading.Thread(target=lambda: shares.update(profile(tree(url.pid)[1:], 8, out)))
        spy.start()
        cpu_per_request(url, [url.pid], photos, 8, count)
        spy.join()
    rows = paired(floors, runs)
    floor = statistics.median(floors)
    return {"floor_ms": floor, "rows": rows, "profile": shares, "photos": len(photos), "rounds": rounds}


def targets(o: dict) -> list[tuple[str, float, float]]:
    served = o["rows"]["in process (make serve)"]
    rows = [
        (
            f"server CPU per request ≤ 1.5× the in-process floor, {r['concurrency']} client(s) (floor × 1.5 / "
            f"measured)",
            1.5 / r["x_floor"],
            1.0,
        )
        for r in served
    ]
    split = o["rows"][MANAGED][-1]
    name = "GPU host's topology (on CPU): server CPU per request ≤ 1.6× the floor, 8 clients (floor × 1.6 / measured)"
    return [*rows, (name, 1.6 / split["x_floor"], 1.0)]


def section(o: dict) -> str:
    lines = [
        "| configuration | clients | server CPU-ms / request | × floor | client CPU-ms / request | p50 ms | "
        "requests/s | processes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| in-process floor (decode + resize + onnxruntime, 1 thread, no HTTP) | – | {o['floor_ms']:.2f} | "
        "1.00 | – | – | – | 1 |",
    ]
    for name, points in o["rows"].items():
        for r in points:
            lines.append(
                f"| {name} | {r['concurrency']} | {r['server_cpu_ms']:.2f} | "
                f"{r['x_floor']:.2f} | {r['client_cpu_ms']:.2f} | {r['p50_ms']:.1f} | "
                f"{r['requests_per_s']:.0f} | {r['processes']} |"
            )
    spy = "\n".join(f"| {name} | {share:.0%} |" for name, share in o["profile"].items())
    return f"""
## Serving overhead: server CPU per request (default model, {o["photos"]} real JPEG photos, `full`)

CPU time (utime + stime from `/proc`, summed over every process of the server: supervisor, workers,
engine) per `/classify`, against the floor: the same decode, resize and onnxruntime call in one process
with one onnxruntime thread and no HTTP. Every server is up at once; each of {o["rounds"]} rounds measures the
floor, then each server in turn (the order rotating), and × floor is the median of each round's ratio. The
load client (httpx, in the benchmark's own process) is measured apart. Figures are medians over the rounds.

{chr(10).join(lines)}

Where the default's worker spends its busy CPU at 8 clients (py-spy, 200 Hz, 8 s; samples of a thread
only waiting on the event loop, a queue or a condition left out):

| stage | share of busy samples |
|---|---:|
{spy}
"""
