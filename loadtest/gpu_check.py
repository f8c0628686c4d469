"""`make gpu-check`: on an NVIDIA host, CUDA parity and fp32/fp16 throughput in process and through the service.

    python -m loadtest.gpu_check [--out reports/gpu] [--allow-cpu]

Unattended, nothing downloaded, about 5 minutes: export.gpu_check exports ResNet-50 fp32 + fp16 and
measures parity (CUDA vs CPU vs torch) and batch 1–128 throughput in process; then both models are
served with RESNET_REQUIRE_GPU=1 as `make serve` runs them on a GPU host (one engine per GPU beside the
front workers), and driven over HTTP by wrk (loadtest/wrk.py) with real JPEG photos (longer side 500 px)
at 1–256 clients: at each point the p99, the fronts' and the engines' CPU per request (from /proc) and
the GPU's utilisation (nvidia-smi); fp16 first, the fast path. With --old-topology, a CUDA engine inside
each of half the cores' front workers is measured too. With --paired KEY, only the default and that one
of VARIANTS are served, both up at once and driven in turn for --rounds rounds, so that each ratio is
paired within a round. Writes OUT/gpu.json after every point (a run cut short keeps what it measured),
which `make bench` folds into BENCHMARKS.md once copied to docs/gpu_check.json.
``--allow-cpu`` is the dry run on a CPU host (the same topology, forced with RESNET_ENGINES=1).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from . import wrk
from .cpu import cpu_seconds, machine
from .drive import photos, save
from .server import serve

ROOT = Path(__file__).resolve().parents[1]


def served_agreement(url: str, images: list[bytes]) -> dict:
    """fp16 vs fp32 through the service: top-1 agreement and the largest top-1 probability gap."""
    same, gap = 0, 0.0
    for data in images:
        answers = [
            httpx.post(
                f"{url}/classify",
                files={"image": ("x.jpg", data, "image/jpeg")},
                data={"model": m, "top_k": "1"},
                timeout=60,
            ).json()["predictions"][0]
            for m in ("resnet50", "resnet50-fp16")
        ]
        same += answers[0]["index"] == answers[1]["index"]
        gap = max(gap, abs(answers[0]["probability"] - answers[1]["probability"]))
    return {"images": len(images), "top1_agreement": same / len(images), "max_probability_gap": gap}


def roles(root: int) -> dict[str, list[int]]:
    """The server's processes: the engines (BentoML's resnet-engine workers) and the rest (the fronts)."""
    below = psutil.Process(root).children(recursive=True)
    engines = [p.pid for p in below if "resnet-engine" in p.cmdline()]
    return {"engine": engines, "front": [root, *(p.pid for p in below if p.pid not in engines)]}


@contextmanager
def gpu_utilisation():
    """Samples of every GPU's utilisation (%) every 200 ms while the block runs; none without nvidia-smi."""
    samples: list[float] = []
    smi = shutil.which("nvidia-smi")
    query = [str(smi), "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
    proc = subprocess.Popen(query, stdout=subprocess.PIPE, text=True) if smi else None
    try:
        yield samples
    finally:
        if proc is not None:
            proc.terminate()
            samples += [float(v) for v in proc.communicate()[0].split() if v.replace(".", "").isdigit()]


def gpu_memory_mib(pids: list[int]) -> float | None:
    """GPU memory held by ``pids`` (nvidia-smi's compute apps), in MiB; None without nvidia-smi."""
    if not (smi := shutil.which("nvidia-smi")):
        return None
    query = [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    rows = [line.split(",") for line in subprocess.run(query, capture_output=True, text=True).stdout.splitlines()]
    return sum(float(used) for pid, used in rows if int(pid) in pids)


class Results(dict):
    """gpu.json, written again after every point: a run cut short at the device's limit keeps what it measured."""

    def __init__(self, path: Path, clients: list[int], **first) -> None:
        super().__init__(first)
        self.path, self.clients = path, clients
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self, indent=2))

    def add(self, key: str, row: dict) -> None:
        self.setdefault(key, []).append(row)
        self.save()


ENGINE_SERIES = {  # /metrics series summed over their labels: the engines' model calls, the fronts' engine calls
    "resnet_batch_size_sum": "images",
    "resnet_batch_size_count": "model_calls",
    "resnet_inference_seconds_sum": "model_seconds",
    "resnet_engine_calls_total": "front_calls",
}


def engine_counters(url: str) -> dict[str, float]:
    """The engines' totals so far, from the fronts' /metrics (the deployment's shared multiprocess store)."""
    totals = dict.fromkeys(ENGINE_SERIES.values(), 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name in ENGINE_SERIES:
                totals[ENGINE_SERIES[sample.name]] += sample.value
    return totals


def engine_figures(before: dict, after: dict, seconds: float, requests: int) -> dict:
    """Images per model call, the share of the wall time a model call ran (summed over engines and calls in
    flight), and images per front-to-engine call: where a served point's time went."""
    d = {k: after[k] - before[k] for k in before}
    return {
        "engine_batch": d["images"] / max(1, d["model_calls"]),
        "model_busy": d["model_seconds"] / seconds,
        "images_per_front_call": requests / max(1, d["front_calls"]),
    }


def point(url, files: list[Path], seconds: float, model: str, clients: int) -> dict:
    """wrk at one client count: p99, the fronts' and engines' CPU per request, the engine's figures, GPU use."""
    pids = roles(url.pid)
    before, counted, t = {role: cpu_seconds(p) for role, p in pids.items()}, engine_counters(url), time.monotonic()
    with gpu_utilisation() as samples:
        row = wrk.run(url, files, clients, seconds, policy="crop", model=model)
    row |= engine_figures(counted, engine_counters(url), time.monotonic() - t, row["requests"])
    for role, p in pids.items():
        row[f"{role}_cpu_ms"] = (cpu_seconds(p) - before[role]) * 1e3 / max(1, row["requests"])
    return {"model": model, **row, "gpu_utilisation": statistics.mean(samples) if samples else None}


def sweep(url, files: list[Path], seconds: float, model: str, results: Results, key: str, clients: list[int]) -> None:
    """A point at each client count, after a warm-up."""
    wrk.run(url, files, clients[0], min(2.0, seconds), policy="crop", model=model)
    for n in clients:
        results.add(key, point(url, files, seconds, model, n))


VARIANTS = {  # served beside the default configuration, most wanted first: key → (title, environment)
    "served_two_engines": ("`RESNET_ENGINES=2`, two engines on the one GPU", {"RESNET_ENGINES": "2"}),
    "served_two_batches_in_flight": ("`RESNET_BATCHES_IN_FLIGHT=2`", {"RESNET_BATCHES_IN_FLIGHT": "2"}),
    "served_nhwc": ("`RESNET_CUDA_NHWC=1`", {"RESNET_CUDA_NHWC": "1"}),
    "served_nvimgcodec": ("`RESNET_DECODER=nvimgcodec`", {"RESNET_DECODER": "nvimgcodec"}),
    "served_together": (
        "two engines, two batches in flight and NHWC together",
        {"RESNET_ENGINES": "2", "RESNET_BATCHES_IN_FLIGHT": "2", "RESNET_CUDA_NHWC": "1"},
    ),
}


def served(out: Path, env: dict, images: list[bytes], files: list[Path], seconds: float, results: Results) -> None:
    """fp16 (the GPU's fast path) at every client count, then fp32 at the last three, through the service; then
    fp16 in each of VARIANTS. Most wanted first; the old topology is old_topology's."""
    started = time.perf_counter()
    with serve("service.service:Classifier", env, out / "server.log") as url:
        results["served_startup_s"] = time.perf_counter() - started  # until ready: every session warm
        results["served_engine_gpu_mib"] = gpu_memory_mib(roles(url.pid)["engine"])
        results["served_providers"] = {m["name"]: m["provider"] for m in httpx.get(f"{url}/models").json()}
        results["served_processes"] = {role: len(p) for role, p in roles(url.pid).items()}
        results["served_agreement"] = served_agreement(url, images)
        sweep(url, files, seconds, "resnet50-fp16", results, "served", results.clients)
        results["served_engine_gpu_mib_after_load"] = gpu_memory_mib(roles(url.pid)["engine"])
        sweep(url, files, seconds, "resnet50", results, "served", results.clients[-3:])
    for key, (title, extra) in VARIANTS.items():
        results.setdefault("variants", {})[key] = title
        started = time.perf_counter()
        with serve("service.service:Classifier", {**env, **extra}, out / f"server-{key}.log") as url:
            results.setdefault("variant_startup_s", {})[key] = time.perf_counter() - started
            sweep(url, files, seconds, "resnet50-fp16", results, key, results.clients[-3:])
    decode_rates(out, env, files, results)


def decode_rates(out: Path, env: dict, files: list[Path], results: Results) -> None:
    """Decode + crop resize alone, one thread, with Pillow and nvImageCodec (service.bench)."""
    fp16 = out / "models" / "resnet50-fp16"
    subprocess.run(
        [sys.executable, "-m", "service.bench", str(out / "decode.json"), str(fp16), *map(str, files)],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    results["decode_images_per_s"] = json.loads((out / "decode.json").read_text())["decode_images_per_s"]
    results.save()


def old_topology(out: Path, env: dict, files: list[Path], seconds: float, results: Results) -> None:
    """The model inside each of half the cores' front workers (RESNET_ENGINES=0), for the record (--old-topology)."""
    old = {**env, "RESNET_ENGINES": "0", "RESNET_FRONT_WORKERS": str(max(1, (os.cpu_count() or 2) // 2))}
    with serve("service.service:Classifier", old, out / "server-old.log") as url:
        sweep(url, files, seconds, "resnet50-fp16", results, "served_engine_in_each_worker", results.clients)


def paired(out: Path, env: dict, files: list[Path], seconds: float, results: Results, key: str, rounds: int) -> None:
    """The default configuration and one of VARIANTS up at once, driven in turn (the order rotating each round) at
    each client count, fp16: the variant's images/s over the default's, paired within each round (servers started
    in turn differed by more than the variants did)."""
    name, (title, extra) = "resnet50-fp16", VARIANTS[key]
    results["paired_title"] = title
    with ExitStack() as stack:
        servers = {
            side: stack.enter_context(serve("service.service:Classifier", cfg, out / f"server-paired-{side}.log"))
            for side, cfg in (("default", env), ("variant", {**env, **extra}))
        }
        for url in servers.values():
            wrk.run(url, files, results.clients[0], min(2.0, seconds), policy="crop", model=name)
        for r in range(rounds):
            for side in list(servers)[r % 2 :] + list(servers)[: r % 2]:
                for n in results.clients:
                    results.add("paired", {"side": side, "round": r, **point(servers[side], files, seconds, name, n)})
    results["paired_ratios"] = paired_ratios(results["paired"])
    results.save()


def paired_ratios(rows: list[dict]) -> dict[int, float]:
    """Per client count: the median over rounds of the variant's images/s over the default's."""
    by = {(r["round"], r["concurrency"], r["side"]): r["images_per_s"] for r in rows}
    ratios: dict[int, list[float]] = {}
    for (rnd, n, side), rate in by.items():
        if side == "variant" and (rnd, n, "default") in by:
            ratios.setdefault(n, []).append(rate / by[(rnd, n, "default")])
    return {n: statistics.median(v) for n, v in sorted(ratios.items())}


def report(result: dict) -> None:
    keys = ("card", "served_providers", "served_agreement", "varying_batches", "decode_images_per_s")
    keys += ("served_startup_s", "served_engine_gpu_mib", "served_engine_gpu_mib_after_load", "paired_ratios")
    print(json.dumps({k: result.get(k) for k in keys}))
    for r in result["inprocess"] + (result["cuda_levers"] or []):
        print(
            f"in process  {r.get('engine', r.get('lever')):38s} batch {r['batch']:4d}  "
            f"{r.get('images_per_s', float('nan')):9.1f} images/s  {r.get('error', '')}"
        )
    for key in ("served", *VARIANTS, "paired", "served_engine_in_each_worker"):
        for r in result.get(key, []):
            where = f"{key} {r.get('side', '')}{r.get('round', '')}"
            print(
                f"{where:30s} {r['model']:14s} clients {r['concurrency']:4d}  {r['images_per_s']:8.1f} images/s  "
                f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}+{r['socket_errors']}  "
                f"wrk CPU {r['client_cpu_ms']:.2f} ms/request  front CPU {r['front_cpu_ms']:.2f}  "
                f"engine CPU {r['engine_cpu_ms']:.2f}  GPU {r['gpu_utilisation']}  batch {r['engine_batch']:.1f}  "
                f"model busy {r['model_busy']:.2f}  images per front call {r['images_per_front_call']:.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu")
    parser.add_argument("--allow-cpu", action="store_true", help="try the script on a machine without CUDA")
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds per load point")
    parser.add_argument("--batches", default="1,8,32,128,256")
    parser.add_argument("--clients", default="1,8,32,128,256", help="wrk's client counts (the last 3 for variants)")
    parser.add_argument("--served-only", action="store_true", help="in process: parity only, not the throughput")
    parser.add_argument("--paired", choices=list(VARIANTS), help="only this variant beside the default, in rounds")
    parser.add_argument("--rounds", type=int, default=3, help="--paired's rounds")
    parser.add_argument("--old-topology", action="store_true", help="also serve a CUDA engine in each front worker")
    args = parser.parse_args()
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cpu = ["--allow-cpu"] if args.allow_cpu else []
    speed = ["--no-speed"] if args.served_only else []
    if not (out / "inprocess.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "export.gpu_check", str(out), "--batches", args.batches, *cpu, *speed],
            cwd=ROOT,
            check=True,
        )
    env = {
        "BENTOML_HOME": str(out / "home"),
        "RESNET_MODELS": "resnet50:latest,resnet50-fp16:latest",
        "RESNET_REQUIRE_GPU": "0" if args.allow_cpu else "1",
        "RESNET_MAX_BATCH_SIZE": "128",
        "RESNET_MAX_CONCURRENCY": "1024",
        "RESNET_PROVIDERS": os.environ.get("RESNET_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider"),
        **({"RESNET_ENGINES": "1"} if args.allow_cpu else {}),  # the dry run: the GPU host's topology on CPU
    }
    folders = [str(out / "models" / m) for m in ("resnet50", "resnet50-fp16")]
    subprocess.run([sys.executable, "-m", "export.store", *folders], cwd=ROOT, env={**os.environ, **env}, check=True)
    images = photos(sizes=(500,))  # ImageNet-like: the longer side 500 px
    files = save(out / "photos", images)
    inprocess = json.loads((out / "inprocess.json").read_text())
    clients = [int(c) for c in args.clients.split(",")]
    results = Results(out / "gpu.json", clients, **inprocess, machine=machine(), served_env=env)
    if args.paired:
        decode_rates(out, env, files, results)
        paired(out, env, files, args.seconds, results, args.paired, args.rounds)
    else:
        served(out, env, images, files, args.seconds, results)
    if args.old_topology:
        old_topology(out, env, files, args.seconds, results)
    results["seconds"] = time.perf_counter() - started
    results.save()
    report(results)
    print(f"wrote {results.path} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
