"""`make gpu-check`: on an NVIDIA host, CUDA parity and fp32/fp16 throughput in process and through the service.

    python -m loadtest.gpu_check [--out reports/gpu] [--allow-cpu]

Unattended, nothing downloaded, about 4 minutes: export.gpu_check exports ResNet-50 fp32 + fp16 and
measures parity (CUDA vs CPU vs torch) and batch 1–128 throughput in process; then both models are
served with RESNET_REQUIRE_GPU=1 and driven over HTTP with real JPEG photos. Writes OUT/gpu.json,
which `make bench` folds into BENCHMARKS.md once copied to docs/gpu_check.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .bench import load, machine, photos
from .server import serve

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCIES = (1, 8, 32, 128)


def served_agreement(url: str, images: list[bytes]) -> dict:
    """fp16 vs fp32 through the service: top-1 agreement and the largest top-1 probability gap."""
    same, gap = 0, 0.0
    for data in images:
        answers = [httpx.post(f"{url}/classify", files={"image": ("x.jpg", data, "image/jpeg")},
                              data={"model": m, "top_k": "1"}, timeout=60).json()["predictions"][0]
                   for m in ("resnet50", "resnet50-fp16")]  # fmt: skip
        same += answers[0]["index"] == answers[1]["index"]
        gap = max(gap, abs(answers[0]["probability"] - answers[1]["probability"]))
    return {"images": len(images), "top1_agreement": same / len(images), "max_probability_gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu")
    parser.add_argument("--allow-cpu", action="store_true", help="try the script on a machine without CUDA")
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds per load point")
    parser.add_argument("--batches", default="1,8,32,128")
    args = parser.parse_args()
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cpu = ["--allow-cpu"] if args.allow_cpu else []
    if not (out / "inprocess.json").is_file():
        subprocess.run([sys.executable, "-m", "export.gpu_check", str(out), "--batches", args.batches, *cpu],
                       cwd=ROOT, check=True)  # fmt: skip
    result = json.loads((out / "inprocess.json").read_text())

    env = {"BENTOML_HOME": str(out / "home"), "RESNET_MODELS": "resnet50:latest,resnet50-fp16:latest",
           "RESNET_REQUIRE_GPU": "0" if args.allow_cpu else "1", "RESNET_MAX_BATCH_SIZE": "128",
           "RESNET_FRONT_WORKERS": str(max(1, (os.cpu_count() or 2) // 2)),
           "RESNET_MAX_CONCURRENCY": "1024"}  # fmt: skip
    folders = [str(out / "models" / m) for m in ("resnet50", "resnet50-fp16")]
    subprocess.run([sys.executable, "-m", "export.store", *folders], cwd=ROOT, env={**os.environ, **env}, check=True)
    images = photos()
    with serve("service.service:Classifier", env, out / "server.log") as url:
        providers = {m["name"]: m["provider"] for m in httpx.get(f"{url}/models").json()}
        agreement = served_agreement(url, images)
        served = [{"model": m, **load(url, "classify", images, c, args.seconds, policy="crop", model=m)}
                  for m in ("resnet50", "resnet50-fp16") for c in CONCURRENCIES]  # fmt: skip
    result |= {"machine": machine(), "served_env": env, "served_providers": providers, "served_agreement": agreement,
               "served": served, "seconds": time.perf_counter() - started}  # fmt: skip
    (out / "gpu.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("card", "served_providers", "served_agreement", "varying_batches")}))
    for r in result["inprocess"]:
        print(f"in process  {r['engine']:38s} batch {r['batch']:4d}  {r['images_per_s']:9.1f} images/s")
    for r in served:
        print(f"served      {r['model']:14s} clients {r['concurrency']:4d}  {r['images_per_s']:8.1f} images/s  "
              f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  batch {r['mean_batch']:5.1f}  "
              f"decode p50 {r['preprocess_ms_p50']:5.1f} ms  engine p50 {r['inference_ms_p50']:6.1f} ms  "
              f"errors {r['errors']}")  # fmt: skip
    print(f"wrote {out / 'gpu.json'} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
