"""OpenVINO beside onnxruntime on an exported file, on this CPU: the record the service's ``auto`` runtime reads.

The export runs it on every CPU precision it writes; for a folder exported before, or to measure on the CPU
you serve on (a record holds only for CPUs with the same instruction sets):

    python -m export.runtimes FOLDER [FOLDER ...] [--photos DIR]
"""

import argparse
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import contract
from contract.metadata import OPENVINO, Runtime, cpu_isa, openvino_config
from contract.threads import ThreadPlan

from .graph import INPUT
from .parity import compare, images
from .session import session
from .speed import machine

PAUSE_S = 0.003  # between timed calls
ROUNDS = 5  # interleaved rounds per batch size: their median is recorded, their spread too
GENERATED = 192  # generated shapes (unseen seeds) beside the parity images for the top-1 agreement
CAPABILITY = {"bf16": "BF16", "f32": "FP32"}  # OpenVINO's names for them among the CPU's capabilities


def hints() -> list[str]:
    """The OpenVINO precisions this CPU runs natively: bf16 only where it has bf16 instructions."""
    import openvino as ov  # here, not above: an export for a GPU host need not have it

    native = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return [name for name, hint in OPENVINO.items() if CAPABILITY[hint] in native]


def compile_model(path: Path, name: str, threads: int):
    """The model compiled as the service compiles it (``contract.openvino_config``)."""
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", openvino_config(name, threads))


def photo_variants(folder: Path, side: int) -> list[np.ndarray]:
    """Each photo of ``folder`` with its shorter side at ``side``, as it is, mirrored, and in greyscale."""
    out = []
    for path in sorted(folder.iterdir()):
        try:
            img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        except OSError:
            continue
        scale = side / min(img.size)
        img = img.resize((max(side, round(img.width * scale)), max(side, round(img.height * scale))))
        out += [np.asarray(v) for v in (img, ImageOps.mirror(img), ImageOps.grayscale(img).convert("RGB"))]
    return out


def timed(run, x: np.ndarray, min_time: float = 0.2) -> tuple[float, float]:
    """(wall, CPU) seconds per call of ``run(x)``, each call followed by a pause as a server's calls are: CPU of every
    thread of this process, so a runtime whose threads spin between calls pays for it here, as it would served."""
    run(x)
    calls, cpu, wall, spent = 0, time.process_time(), time.perf_counter(), 0.0
    while calls < 2 or time.perf_counter() - wall < min_time:
        start = time.perf_counter()
        run(x)
        spent += time.perf_counter() - start
        time.sleep(PAUSE_S)
        calls += 1
    return spent / calls, (time.process_time() - cpu) / calls


def cpu_per_call(run, x: np.ndarray, min_time: float = 0.2) -> float:
    """CPU seconds per call of ``run(x)`` (``timed``)."""
    return timed(run, x, min_time)[1]


def _top1(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([int(a.argmax() == b.argmax()) for a, b in pairs]))


def measure(folder: Path, name: str, photos: list[np.ndarray], batches: tuple[int, ...] = (1, 8)) -> Runtime:
    """One OpenVINO precision on ``folder``'s model.onnx, its CPU time per image measured interleaved with
    onnxruntime's, and its logits against onnxruntime's on the export's parity shapes and on ``photos``."""
    meta, path = contract.read(folder), folder / "model.onnx"
    threads = ThreadPlan.make("in-process").runtime  # as a served model's runtime gets them
    ort = session(path, threads=threads, spinning=False)  # as the service runs it
    request = compile_model(path, name, threads).create_infer_request()

    def run_ov(x: np.ndarray) -> np.ndarray:
        request.infer({INPUT: x})
        return request.get_tensor("logits").data.copy()

    def run_ort(x: np.ndarray) -> np.ndarray:
        return ort.run(["logits"], {INPUT: x})[0]

    size, ms, base, spread = meta.preprocessing.crop.size, [], [], 0.0
    for batch in batches:
        x = images((batch, size, size), seed=7)
        rounds = [(cpu_per_call(run_ort, x), cpu_per_call(run_ov, x)) for _ in range(ROUNDS)]  # interleaved
        base.append(round(statistics.median(o for o, _ in rounds) * 1e3 / batch, 3))
        ms.append(round(statistics.median(v for _, v in rounds) * 1e3 / batch, 3))
        speedups = [o / v for o, v in rounds]
        spread = max(spread, (max(speedups) - min(speedups)) / statistics.median(speedups))
    inputs = [images(tuple(row["shape"]), seed=i) for i, row in enumerate(meta.parity["shapes"])]  # the export's
    inputs += [images((32, size, size), seed=2026 + i) for i in range(GENERATED // 32)]  # unseen: a real percentage
    parity = [compare(run_ort(x), run_ov(x)) | {"n": len(x)} for x in inputs]
    on_photos = [(run_ort(p[None])[0], run_ov(p[None])[0]) for p in photos]
    return Runtime(
        name=name,
        version=version("openvino"),
        cpu=machine(),
        isa=cpu_isa(),
        threads=threads,
        size=size,
        batches=list(batches),
        ms_per_image=ms,
        onnxruntime_ms_per_image=base,
        spread=round(spread, 3),
        max_rel=max(r["max_rel"] for r in parity),
        top1=sum(r["top1"] * r["n"] for r in parity) / sum(r["n"] for r in parity),
        top1_photos=_top1(on_photos) if photos else None,
        photos=len(photos),
    )


def record(folder: Path, photos_dir: Path | None = None, batches: tuple[int, ...] = (1, 8)) -> list[Runtime]:
    """Measure every OpenVINO precision this CPU runs on ``folder`` and write them into its model.json."""
    meta = contract.read(folder)
    photos = photo_variants(photos_dir, meta.preprocessing.crop.size) if photos_dir else []
    runtimes = [measure(folder, name, photos, batches) for name in hints()]
    contract.write(folder, meta.model_copy(update={"runtimes": runtimes}))
    return runtimes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="exported folders (model.onnx + model.json)")
    parser.add_argument("--photos", type=Path, help="real photos to measure top-1 agreement on")
    parser.add_argument("--batches", default="1,8", help="batch sizes to time (default 1,8)")
    args = parser.parse_args()
    for folder in args.folders:
        for r in record(folder, args.photos, tuple(int(b) for b in args.batches.split(","))):
            speed = " ".join(
                f"batch {b}: {o:.2f} → {m:.2f}"
                for b, o, m in zip(r.batches, r.onnxruntime_ms_per_image, r.ms_per_image, strict=True)
            )
            print(
                f"{folder.name} {r.name}: {r.speedup():.2f}× onnxruntime ({speed} ms/image); "
                f"max rel {r.max_rel:.1e}, top-1 {r.top1:.1%} parity, {r.top1_photos} photos"
            )


if __name__ == "__main__":
    main()
