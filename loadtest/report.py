"""BENCHMARKS.md and its plots from the figures `make bench` measured: rendering only, no measuring."""

import json
from pathlib import Path

from . import overhead, runtimes, shadow, wire, workload
from .cpu import machine

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, series in rows.items():
        c = [r["concurrency"] for r in series]
        a.plot(c, [r["images_per_s"] for r in series], marker="o", label=name)
        b.plot(c, [r["p50_ms"] for r in series], marker="o", label=f"{name} p50")
        b.plot(c, [r["p99_ms"] for r in series], marker="x", linestyle="--", label=f"{name} p99")
    for ax, title, unit in ((a, "Throughput", "images/s"), (b, "Latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_inprocess(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, model in zip(axes, ("resnet50", "shapes-resnet10"), strict=True):
        mine = [r for r in rows if r["model"] == model]
        engines = sorted({r["engine"] for r in mine})
        batches = sorted({r["batch"] for r in mine})
        width = 0.8 / len(engines)
        for i, e in enumerate(engines):
            ys = [next(r["images_per_s"] for r in mine if r["engine"] == e and r["batch"] == b) for b in batches]
            ax.bar([j + i * width for j in range(len(batches))], ys, width, label=e)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
        ax.set_title(f"{model}, in process")
        ax.set_ylabel("images/s")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"

    def cell(r: dict, k: str, f: str) -> str:
        return "–" if r.get(k) is None else format(r[k], f)

    return head + "\n".join("| " + " | ".join(cell(r, k, f) for k, _, f in cols) + " |" for r in rows)


GPU_PARITY = [
    ("model", "model", "s"),
    ("engine", "engine", "s"),
    ("max_rel", "max error ÷ largest logit", ".1e"),
    ("top1", "top-1 agreement", ".2f"),
]
GPU_IN_PROCESS = [
    ("engine", "engine", "s"),
    ("batch", "batch", "d"),
    ("ms_per_batch", "ms / batch", ".2f"),
    ("images_per_s", "images/s", ".0f"),
]
GPU_HTTP = [
    ("model", "model", "s"),
    ("concurrency", "clients", "d"),
    ("images_per_s", "images/s", ".0f"),
    ("p50_ms", "p50 ms", ".1f"),
    ("p99_ms", "p99 ms", ".1f"),
    ("errors", "non-2xx", "d"),
    ("socket_errors", "socket errors", "d"),
    ("front_cpu_ms", "fronts' CPU-ms / request", ".2f"),
    ("engine_cpu_ms", "engine's CPU-ms / request", ".2f"),
    ("gpu_utilisation", "GPU busy %", ".0f"),
    ("engine_batch", "images / model call", ".1f"),
    ("model_busy", "model calls' share of the time", ".2f"),
    ("client_cpu_ms", "wrk CPU-ms / request", ".2f"),
]


def gpu_targets(g: dict) -> list[tuple[str, float, float]]:
    """The GPU host's targets as ratios (≥ 1 is met): 3,000 images/s at 128 clients with CPU decoding; 256 clients
    keep 0.9× the series' best with ≤ 1 % errors; nvImageCodec reaches half the in-process fp16 ceiling."""
    fp16 = {r["concurrency"]: r for r in g.get("served", []) if r["model"] == "resnet50-fp16"}
    ceiling = max((r["images_per_s"] for r in g["inprocess"] if r["engine"] == "onnxruntime CUDA fp16"), default=0)
    out = []
    if 128 in fp16:
        out.append(("fp16 served at 128 clients, CPU decoding: images/s ÷ 3,000", fp16[128]["images_per_s"] / 3000, 1))
    if 256 in fp16:
        r, best = fp16[256], max(x["images_per_s"] for x in fp16.values())
        failed = (r["errors"] + r["socket_errors"]) / max(1, r["requests"])
        out.append(("fp16 at 256 clients: images/s ÷ (0.9 × the series' best)", r["images_per_s"] / (0.9 * best), 1))
        out.append(("fp16 at 256 clients: 1 % ÷ share of errors", 0.01 / failed if failed else float("inf"), 1))
    if (nv := g.get("served_nvimgcodec")) and ceiling:
        best = max(r["images_per_s"] for r in nv)
        out.append(("nvImageCodec served: best images/s ÷ (0.5 × in-process fp16 ceiling)", best / (0.5 * ceiling), 1))
    return out


def worst_parity(g: dict) -> list[dict]:
    """Per (model, engine): the largest error and the lowest top-1 agreement over the shapes checked."""
    worst: dict = {}
    for model, rows in g["parity"].items():
        for r in rows:
            w = worst.setdefault((model, r["engine"]), {"model": model, "engine": r["engine"], "max_rel": 0, "top1": 1})
            w["max_rel"], w["top1"] = max(w["max_rel"], r["max_rel"]), min(w["top1"], r["top1"])
    return list(worst.values())


def gpu_section(path: Path) -> str:
    """BENCHMARKS.md's GPU part, from the JSON `make gpu-check` wrote on a GPU host (copied to docs/)."""
    if not path.is_file():
        return ""
    g = json.loads(path.read_text())
    v, m = g["varying_batches"], g["machine"]
    agree = g.get("served_agreement") or {"top1_agreement": float("nan"), "images": 0}
    took = f"{g['seconds']:.0f} s unattended" if "seconds" in g else "cut short: the points it finished"
    return f"""
## GPU: {g["card"]["name"]} (`make gpu-check`, {took})

On {g["card"]["name"]} ({g["card"]["memory_gib"]} GiB), {m["cpu"]} × {m["cores"]} cores, onnxruntime-gpu
{g["onnxruntime"]} (CUDA provider, HEURISTIC cuDNN search), torch {g["torch"]}. ResNet-50 is untrained
(BatchNorm calibrated), exported here as fp32 and fp16; the reference is eager torch fp32 on CPU, on
the same uint8 images at 224², 224² × 8, 177×301 × 2 and 513×387.

{table(worst_parity(g), GPU_PARITY)}

onnxruntime's CUDA provider uses TF32 unless `use_tf32=0`: its fp32 logits then move by ~1e-2 of
their range, beyond the 1e-3 an fp32 export is held to, so the service turns TF32 off
(`RESNET_TF32=1` turns it on) and fp16 is the fast path.

{table(g["inprocess"], GPU_IN_PROCESS)}

Batch sizes that change from call to call (as a batching server makes them) cost one onnxruntime
CUDA session {v["one_session_ms_per_call"]:.1f} ms per call (the convolutions re-plan on every new
shape); one session per power-of-two size, the batch padded up, costs
{v["padded_sessions_ms_per_call"]:.1f} ms. The service does the latter on CUDA.

{served_intro(g)} fp16 vs fp32 top-1 agreement {agree["top1_agreement"]:.2f} over {agree["images"]} photos:

{table(g.get("served", []), GPU_HTTP)}

{targets_table(gpu_targets(g))}

{g.get("note", "")}
{gpu_extras(g)}"""


def served_intro(g: dict) -> str:
    p, env = g.get("served_processes", {}), g.get("served_env", {})
    start = g.get("served_startup_s")
    mib = [g.get(k) for k in ("served_engine_gpu_mib", "served_engine_gpu_mib_after_load")]
    return (
        f"Served as `make serve` runs on a GPU host: {p.get('engine', '?')} engine process beside "
        f"{p.get('front', 1) - 1} front workers (and BentoML's supervisor), "
        f"`RESNET_MAX_BATCH_SIZE={env.get('RESNET_MAX_BATCH_SIZE')}`; real JPEG photos (longer side 500 px), `crop`, "
        f"driven by wrk on the same host. Ready {'–' if start is None else f'{start:.0f}'} s after the start; the "
        f"engine held {' and '.join('–' if m is None else f'{m:,.0f}' for m in mib)} MiB of GPU memory when ready and "
        "after the first sweep."
    )


def gpu_extras(g: dict) -> str:
    """The parts of a `make gpu-check` run that older runs lack: CUDA levers, GPU decoding, served with it."""
    out = ""
    if g.get("cuda_levers"):
        cols = [
            ("lever", "CUDA provider lever (fp16)", "s"),
            ("batch", "batch", "d"),
            ("images_per_s", "images/s", ".0f"),
            ("error", "error", "s"),
        ]
        out += f"\n### In process: onnxruntime CUDA options\n\n{table(g['cuda_levers'], cols)}\n"
    if rates := g.get("decode_images_per_s"):
        nv = rates.get("nvimgcodec")
        out += (
            f"\nDecode + `crop` resize alone, one thread: Pillow {rates['pillow']:.0f} images/s, nvImageCodec "
            f"{'not available' if nv is None else f'{nv:.0f} images/s'}.\n"
        )
    old = {"served_engine_in_each_worker": "the old topology (a CUDA engine in each front worker)"}
    for key, title in (g.get("variants", {}) | old).items():
        if g.get(key):
            out += f"\nServed with {title}:\n\n{table(g[key], GPU_HTTP)}\n"
    return out


COLS_IN = [
    ("model", "model", "s"),
    ("engine", "engine", "s"),
    ("batch", "batch", "d"),
    ("ms_per_batch", "ms / batch (median)", ".1f"),
    ("images_per_s", "images/s", ".1f"),
]
COLS_HTTP = [
    ("name", "configuration", "s"),
    ("concurrency", "clients", "d"),
    ("images_per_s", "images/s", ".1f"),
    ("p50_ms", "p50 ms", ".1f"),
    ("p99_ms", "p99 ms", ".1f"),
    ("mean_batch", "mean batch", ".2f"),
    ("errors", "errors", "d"),
    ("client_cpu_ms", "load client CPU-ms / request", ".2f"),
]


def targets_table(targets: list[tuple[str, float, float]]) -> str:
    head = "| target | measured | needed | met |\n|---|---:|---:|:-:|\n"
    return head + "\n".join(f"| {t} | {v:.2f} | {n:g} | {'yes' if v >= n else '**no**'} |" for t, v, n in targets)


def int8_line(inproc: dict) -> str:
    r = inproc["int8_recipe"]
    return (
        f"int8: {r['format']}, {r['weights']} (zero point {r['weight_zero_point']}, for {r['for']}), "
        f"{r['activations']} activations, quantised ops {', '.join(r['ops'])}, {r['calibration']} calibration on "
        f"{r['calibration_images']} images; top-1 agreement with fp32 on {inproc['photos']} real photos "
        f"{inproc['int8_agreement_photos']:.0%} (untrained ResNet-50). What each lever gave: docs/int8_levers.md."
    )


def write(
    inproc: dict,
    pipeline: dict,
    series: dict,
    points: dict,
    cost: dict,
    targets: list,
    seconds: float,
    on_cpu: dict,
    telemetry: dict,
    wires: dict,
    real: dict,
    copies: dict,
) -> str:
    """BENCHMARKS.md and docs/bench_*.png; returns the Markdown."""
    plot(series, DOCS / "bench_http.png")
    plot_inprocess(inproc["rows"], DOCS / "bench_inprocess.png")
    m, export_cost, c1 = machine(), inproc["export_cost"], series["fp32, batching"][0]
    http_rows = [{"name": k, **r} for k, v in series.items() for r in v] + [{"name": k, **r} for k, r in points.items()]
    text = f"""# Benchmarks

Measured by `make bench` in one run on one machine: {m["cpu"]} ({", ".join(m["isa"])}), {m["cores"]} cores,
onnxruntime {inproc["onnxruntime"]} on `CPUExecutionProvider`, torch {inproc["torch"]} ({inproc["threads"]} threads).
Every figure is a median over repeated runs (in process) or a {seconds:g}-second load point after a
warm-up (HTTP). These machines are shared and noisy: read the ratios, not the absolute numbers.

## Targets

{targets_table(targets)}

{workload.section(real)}
## In process: eager torch vs onnxruntime fp32 vs int8 (uint8 NHWC in, same graph)

![in-process throughput](docs/bench_inprocess.png)

{table(inproc["rows"], COLS_IN)}

{int8_line(inproc)}

Export of `{export_cost["variant"]}` (CLI, fp32, parity on 5 shapes, no reference statistics):
{export_cost["seconds"]:.0f} s, peak resident memory {export_cost["peak_rss_mb"]:.0f} MB.

## In-process pipeline vs HTTP (ResNet-50 fp32, real JPEG photos 200–1000 px)

Decode + preprocess + onnxruntime, one image at a time, no HTTP: `crop` p50
{pipeline["crop"]["p50_ms"]:.1f} ms (of which preprocessing {pipeline["crop"]["preprocess_p50_ms"]:.1f} ms),
`full` p50 {pipeline["full"]["p50_ms"]:.1f} ms. Through HTTP at concurrency 1: p50 {c1["p50_ms"]:.1f} ms.

Model telemetry per one-image request (labels, confidence, the out-of-distribution score and the drift window,
metrics in Prometheus multiprocess mode as served; median of 5 × 5,000 calls):
{", ".join(f"`{m}` {us:.0f} µs" for m, us in telemetry.items())}.

![HTTP throughput and latency](docs/bench_http.png)

{table(http_rows, COLS_HTTP)}
"""
    text += overhead.section(cost) + runtimes.section(on_cpu) + wire.section(wires) + shadow.section(copies)
    text += gpu_section(DOCS / "gpu_check.json")
    (ROOT / "BENCHMARKS.md").write_text(text)
    return text
