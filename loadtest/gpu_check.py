"""`make gpu-check`: on an NVIDIA host, CUDA parity and fp32/fp16 throughput in process and through the service.

    python -m loadtest.gpu_check [--out reports/gpu] [--allow-cpu]

Unattended, nothing downloaded, about 4 minutes: export.gpu_check exports ResNet-50 fp32 + fp16 and
measures parity (CUDA vs CPU vs torch) and batch 1–128 throughput in process; then both models are
served with RESNET_REQUIRE_GPU=1 and driven over HTTP by wrk (loadtest/wrk.py) with real JPEG photos
(longer side 500 px) at 1–256 clients. Writes OUT/gpu.json,
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

from . import wrk
from .drive import photos, save
from .report import machine
from .server import serve

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = [1, 8, 32, 128, 256]


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


def served(out: Path, env: dict, images: list[bytes], files: list[Path], seconds: float) -> dict:
    """Both models through the service with wrk at 1–256 clients; fp16 again with JPEG decoded on the GPU."""
    with serve("service.service:Classifier", env, out / "server.log") as url:
        result = {"served_providers": {m["name"]: m["provider"] for m in httpx.get(f"{url}/models").json()},
                  "served_agreement": served_agreement(url, images),
                  "served": [{"model": m, **r} for m in ("resnet50", "resnet50-fp16")
                             for r in wrk.sweep(url, files, CLIENTS, seconds, policy="crop", model=m)]}  # fmt: skip
    with serve("service.service:Classifier", {**env, "RESNET_DECODER": "nvimgcodec"}, out / "server-nv.log") as url:
        sweep = wrk.sweep(url, files, CLIENTS[2:], seconds, policy="crop", model="resnet50-fp16")
        result["served_nvimgcodec"] = [{"model": "resnet50-fp16", **r} for r in sweep]
    fp16 = out / "models" / "resnet50-fp16"
    subprocess.run([sys.executable, "-m", "service.bench", str(out / "decode.json"), str(fp16), *map(str, files)],
                   cwd=ROOT, env={**os.environ, **env}, check=True)  # fmt: skip
    result["decode_images_per_s"] = json.loads((out / "decode.json").read_text())["decode_images_per_s"]
    return result


def report(result: dict) -> None:
    print(json.dumps({k: result[k] for k in ("card", "served_providers", "served_agreement", "varying_batches",
                                             "decode_images_per_s")}))  # fmt: skip
    for r in result["inprocess"] + (result["cuda_levers"] or []):
        print(f"in process  {r.get('engine', r.get('lever')):38s} batch {r['batch']:4d}  "
              f"{r.get('images_per_s', float('nan')):9.1f} images/s  {r.get('error', '')}")  # fmt: skip
    for r in result["served"] + result["served_nvimgcodec"]:
        print(f"served      {r['model']:14s} clients {r['concurrency']:4d}  {r['images_per_s']:8.1f} images/s  "
              f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}+{r['socket_errors']}  "
              f"wrk CPU {r['client_cpu_ms']:.2f} ms/request")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu")
    parser.add_argument("--allow-cpu", action="store_true", help="try the script on a machine without CUDA")
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds per load point")
    parser.add_argument("--batches", default="1,8,32,128,256")
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
           "RESNET_FRONT_WORKERS": os.environ.get("RESNET_FRONT_WORKERS", str(max(1, (os.cpu_count() or 2) // 2))),
           "RESNET_MAX_CONCURRENCY": "1024", "RESNET_PROVIDERS": os.environ.get("RESNET_PROVIDERS",
           "CUDAExecutionProvider,CPUExecutionProvider")}  # fmt: skip
    folders = [str(out / "models" / m) for m in ("resnet50", "resnet50-fp16")]
    subprocess.run([sys.executable, "-m", "export.store", *folders], cwd=ROOT, env={**os.environ, **env}, check=True)
    images = photos(sizes=(500,))  # ImageNet-like: the longer side 500 px
    files = save(out / "photos", images)
    result |= {"machine": machine(), "served_env": env, **served(out, env, images, files, args.seconds)}
    result["seconds"] = time.perf_counter() - started
    (out / "gpu.json").write_text(json.dumps(result, indent=2))
    report(result)
    print(f"wrote {out / 'gpu.json'} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
