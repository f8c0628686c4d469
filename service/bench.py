"""In-process pipeline timing: decode + preprocess + onnxruntime on files, no HTTP, one at a time.

python -m service.bench OUT.json MODEL_FOLDER IMAGE... [--telemetry FOLDER] [--floor-only]   (run by `make bench`)

Besides latency, it gives the CPU floor of a request: CPU time per image of the same work with one
onnxruntime thread, which the served CPU-ms per request are measured against; and what the model
telemetry adds to each request (classifier/telemetry.py), too small for the served CPU-ms to show.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from . import catalog
from .catalog import Entry
from .classifier.front import softmax
from .classifier.telemetry import Monitor
from .config import Settings
from .engine.interface import Item
from .engine.runner import Runner
from .engine.sessions import Sessions
from .imaging.decoders import jpeg_decoder
from .imaging.preprocess import ImageLimits, prepare

CPU = ("CPUExecutionProvider",)


def pipeline(runner: Runner, entry: Entry, data: list[bytes], policy: str, runs: int = 3) -> dict:
    """Per-image latency (median), preprocessing share and CPU time over ``runs`` passes of ``data``."""
    latencies, pre_ms, limits = [], [], ImageLimits.of(Settings(), entry.meta.min_input_size)
    cpu = time.process_time()
    for _ in range(runs):
        for blob in data:
            t0 = time.perf_counter()
            p = prepare(blob, policy, entry.meta.preprocessing, limits)
            t1 = time.perf_counter()
            runner([Item(entry.name, p.pixels)])
            latencies.append((time.perf_counter() - t0) * 1e3)
            pre_ms.append((t1 - t0) * 1e3)
    return {
        "p50_ms": statistics.median(latencies),
        "preprocess_p50_ms": statistics.median(pre_ms),
        "images_per_s": 1e3 / statistics.mean(latencies),
        "cpu_ms": (time.process_time() - cpu) * 1e3 / len(latencies),
    }


def decode_rates(entry: Entry, data: list[bytes], runs: int = 3) -> dict[str, float | None]:
    """Images/s of decode + resize alone (``crop``, one thread), with Pillow and, where it loads, nvImageCodec; each
    after an untimed pass, since nvImageCodec's first decode sets up the card."""
    limits, pre, rates = ImageLimits.of(Settings(), entry.meta.min_input_size), entry.meta.preprocessing, {}
    for name in ("pillow", "nvimgcodec"):
        jpeg = jpeg_decoder(name)
        if name != "pillow" and jpeg is None:
            rates[name] = None
            continue
        for blob in data:
            prepare(blob, "crop", pre, limits, jpeg)
        t = time.perf_counter()
        for _ in range(runs):
            for blob in data:
                prepare(blob, "crop", pre, limits, jpeg)
        rates[name] = runs * len(data) / (time.perf_counter() - t)
    return rates


def telemetry_us(entry: Entry, data: list[bytes], calls: int = 5000) -> float:
    """Median microseconds of Monitor.observe for a one-image request (labels, confidence, OOD score, drift)."""
    limits = ImageLimits.of(Settings(), entry.meta.min_input_size)
    sessions, monitor = Sessions(entry, CPU, 1, False), Monitor(entry)
    answers = []
    for blob in data:
        pixels = prepare(blob, entry.meta.preprocessing.policy, entry.meta.preprocessing, limits).pixels
        out = sessions.run(pixels[None], ["logits", "embedding"])
        answers.append((softmax(out["logits"]), out["embedding"], [1.0]))  # [1.0]: the answer's model-call ms
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for i in range(calls):
            monitor.observe(*answers[i % len(answers)])
        rounds.append((time.perf_counter() - t) / calls * 1e6)
    return statistics.median(rounds)


def main(out: Path, folder: Path, files: list[Path], telemetry: list[Path], floor_only: bool = False) -> None:
    entry = catalog.read(folder.name, folder)
    data = [f.read_bytes() for f in files]
    one = Runner({entry.name: Sessions(entry, CPU, 1, False)})  # one thread: the CPU floor
    floor = {policy: pipeline(one, entry, data, policy, runs=10)["cpu_ms"] for policy in ("crop", "full")}
    if floor_only:  # once per round of loadtest/overhead.py, paired with the served figures
        out.write_text(json.dumps({"model": entry.name, "images": len(files), "cpu_floor_ms": floor}, indent=2))
        return
    fast = Runner({entry.name: Sessions(entry, CPU, 0, False)})  # every core: the latency a request can reach
    rows = {policy: pipeline(fast, entry, data, policy) for policy in ("crop", "full")}
    result = {
        "model": entry.name,
        "images": len(files),
        "pipeline": rows,
        "cpu_floor_ms": floor,
        "decode_images_per_s": decode_rates(entry, data),
        "telemetry_us": {f.name: telemetry_us(catalog.read(f.name, f), data) for f in telemetry},
    }
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--telemetry", nargs="*", type=Path, default=[], help="models with reference statistics")
    parser.add_argument("--floor-only", action="store_true", help="only the CPU floor (loadtest/overhead.py)")
    args = parser.parse_args()
    main(args.out, args.folder, args.images, args.telemetry, args.floor_only)
