"""`make bench`: the whole chain measured side by side in one run → BENCHMARKS.md + PNG plots.

    python -m loadtest.bench [--seconds S]

It runs the in-process benchmarks as child processes (export.bench, service.bench), starts the
service (batching on, then off) and the naive baseline, drives each over HTTP at several
concurrencies with real JPEG photos, soaks the default model, measures the serving overhead, and
checks the targets the issues set (loadtest/targets.py); loadtest/report.py writes the report.
"""

import argparse
import io
import json
import shutil
from pathlib import Path

from PIL import Image

from . import overhead, report, runtimes, shadow, targets, wire, workload, wrk
from .drive import PHOTOS, load, photos, save
from .server import child, model_home, serve
from .soak import mixed_requests, soak

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "bench"
MODELS = OUT / "models"


def in_process(images: list[bytes]) -> tuple[dict, dict, dict]:
    """export.bench (torch vs onnxruntime fp32/int8) and service.bench (decode + model, no HTTP; the telemetry's
    cost per request on the default models, with metrics in Prometheus multiprocess mode as served)."""
    files = save(OUT / "photos", images)
    child("export.bench", str(OUT), str(OUT / "photos"))
    metrics = OUT / "prometheus-multiproc"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir()
    defaults = [str(ROOT / "default_model" / m) for m in ("shapes-resnet10", "shapes-resnet10-int8")]
    cmd = ["service.bench", str(OUT / "pipeline.json"), str(MODELS / "resnet50"), *map(str, files)]
    child(*cmd, "--telemetry", *defaults, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    pipeline = json.loads((OUT / "pipeline.json").read_text())
    return json.loads((OUT / "inprocess.json").read_text()), pipeline["pipeline"], pipeline["telemetry_us"]


def served(images: list[bytes], seconds: float) -> tuple[dict, dict]:
    """ResNet-50 over HTTP: batching on and off, int8, `full` mixed vs fixed sizes, and the naive service;
    the fp32 and int8 points at 8 clients again with wrk, whose CPU per request is a fifth of httpx's."""
    home = model_home(OUT / "home", MODELS / "resnet50", MODELS / "resnet50-int8")
    env = {
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "RESNET_PROVIDERS": "CPUExecutionProvider",
        "RESNET_MODELS": "resnet50:latest,resnet50-int8:latest",
        "RESNET_RUNTIME": "onnxruntime",  # OpenVINO beside it: loadtest/runtimes.py
    }
    # one aspect ratio (a single bucket) vs the mixed sizes and aspects of the photos
    fixed = [d for d in images if Image.open(io.BytesIO(d)).size == Image.open(io.BytesIO(images[0])).size]
    concurrencies, s = (1, 4, 16, 64), seconds
    series, points = {}, {}
    with serve("service.service:Classifier", env, OUT / "server.log") as url:
        series["fp32, batching"] = [load(url, "classify", images, c, s, policy="crop") for c in concurrencies]
        points["fp32 c8"] = load(url, "classify", images, 8, s, policy="crop")
        points["int8 c8"] = load(url, "classify", images, 8, s, policy="crop", model="resnet50-int8")
        files = sorted((OUT / "photos").iterdir())
        points["fp32 c8 wrk"] = wrk.sweep(url, files, [8], s, policy="crop")[0]
        points["int8 c8 wrk"] = wrk.sweep(url, files, [8], s, policy="crop", model="resnet50-int8")[0]
        points["full mixed c8"] = load(url, "classify", images, 8, s, policy="full")
        points["full mixed c16"] = load(url, "classify", images, 16, s, policy="full")
        points["full fixed c8"] = load(url, "classify", fixed, 8, s, policy="full")
    with serve("service.service:Classifier", {**env, "RESNET_BATCHING": "0"}, OUT / "server-nobatch.log") as url:
        series["fp32, no batching"] = [load(url, "classify", images, c, s, policy="crop") for c in concurrencies]
    with serve(
        "loadtest.naive_service:Naive", {**env, "NAIVE_MODEL": str(MODELS / "resnet50")}, OUT / "server-naive.log"
    ) as url:
        series["naive fp32"] = [load(url, "classify", images, c, s) for c in (1, 8)]
        points["naive c8"] = series["naive fp32"][1]
    return series, points


def soaked() -> dict:
    """20,000 mixed requests against the default model after a 4,000-request warm-up."""
    defaults = (ROOT / "default_model" / m for m in ("shapes-resnet10", "shapes-resnet10-int8"))
    home = model_home(OUT / "soak-home", *defaults)
    with serve("service.service:Classifier", {"BENTOML_HOME": str(home)}, OUT / "server-soak.log") as url:
        return soak(url, home, mixed_requests(PHOTOS), requests=20_000, warmup=4_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per HTTP load point")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    images = photos()
    inproc, pipeline, telemetry = in_process(images)
    series, points = served(images, args.seconds)
    soak_result = soaked()
    six = photos(sizes=(640,))
    cost = overhead.measure(OUT, six, save(OUT / "photos-640", six))
    files = sorted((OUT / "photos").iterdir())
    on_cpu = runtimes.measure(OUT, MODELS, PHOTOS, files, six, args.seconds)
    wires = wire.measure(OUT, six[0])
    real = workload.measure(OUT, MODELS / "resnet50", args.seconds, rounds=3)
    copies = shadow.measure(OUT, MODELS, args.seconds, rounds=3)
    met = workload.targets(real) + targets.every(inproc, series, points, soak_result, cost) + runtimes.targets(on_cpu)
    met += targets.telemetry(telemetry) + shadow.targets(copies) + wire.targets(wires)
    report.write(inproc, pipeline, series, points, cost, met, args.seconds, on_cpu, telemetry, wires, real, copies)
    summary = {"targets": met, "series": series, "points": points, "soak": soak_result, "overhead": cost}
    summary["telemetry_us"], summary["wire"], summary["workload"] = telemetry, wires, real
    summary["shadow"] = copies
    summary["runtimes"] = on_cpu
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
