"""BENCHMARKS.md and its plots from the figures `make bench` measured: rendering only, no measuring."""

from pathlib import Path

from . import overhead, runtimes, shadow, wire, workload
from .cpu import machine
from .gpu_report import gpu_section
from .tables import roof_line, table, targets_table

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

{int8_line(inproc)} {roof_line(inproc)}

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
