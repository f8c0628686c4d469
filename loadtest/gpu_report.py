"""BENCHMARKS.md's GPU part, from the JSON `make gpu-check` wrote on a GPU host (copied to docs/gpu_check.json).

Apart from loadtest/report.py, which imports every section's client (tritonclient among them), so that a test can
render it beside kserve's protocol classes."""

import json
from pathlib import Path

from .tables import table, targets_table

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
    return out + paired_part(g)


def paired_part(g: dict) -> str:
    """`--paired`: the default and one variant up at once, driven in turn in rounds; the medians of the ratios."""
    if not (ratios := g.get("paired_ratios")):
        return ""
    rounds = 1 + max(r["round"] for r in g["paired"])
    rows = [{"concurrency": int(n), "ratio": v} for n, v in ratios.items()]
    cols = [("concurrency", "clients", "d"), ("ratio", "images/s, variant ÷ default (median)", ".2f")]
    points = table(g["paired"], [("side", "server", "s"), *GPU_HTTP])
    return (
        f"\nServed with {g['paired_title']} beside the default configuration, both up at once and driven in turn, "
        f"{rounds} rounds (fp16):\n\n{table(rows, cols)}\n\n{points}\n"
    )
