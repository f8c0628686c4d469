"""What each int8 quantisation lever gives on this CPU, so that the export's recipe is chosen per instruction set
(export/variants.py) from figures measured on that kind of CPU: an fp32 export quantised by each recipe, timed
against fp32 in interleaved rounds as the service runs it (its thread plan, idle threads sleeping, a pause between
calls), and its top-1 agreement with fp32 on generated shapes and real photos.

    python -m export.int8_levers FOLDER [--photos DIR] [--rounds 5] [--out FILE.md]

docs/int8_levers.md is the same study made by hand on a Xeon with AMX; docs/int8_levers_*.md are this tool's.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat, QuantType

import contract
from contract.metadata import cpu_isa
from contract.threads import ThreadPlan

from .graph import INPUT
from .parity import images
from .pipeline import ExportSpec, calibration
from .runtimes import compile_model, photo_variants, timed
from .session import session
from .speed import machine
from .variants import has_amx, to_int8

# onnxruntime's documented levers for x86: U8U8 and reduce_range avoid VPMADDUBSW's 16-bit saturation on CPUs
# without VNNI; QOperator is the other format; the weight zero point picks the VNNI or the QGEMM (AMX) kernels
LEVERS: dict[str, dict] = {
    "weight zero point 0 (the VNNI recipe)": {"amx": False},
    "weight zero point +1 (the AMX recipe)": {"amx": True},
    "reduce_range (7-bit weights)": {"amx": False, "reduce_range": True},
    "U8U8 (uint8 weights)": {"amx": False, "weight_type": QuantType.QUInt8},
    "QOperator format": {"amx": False, "quant_format": QuantFormat.QOperator},
}
OPENVINO = "OpenVINO on the VNNI recipe's file"
BATCHES = (1, 8)
GENERATED = 192  # generated shapes for the top-1 agreement, beside the photos


def runners(folder: Path, work: Path, threads: int) -> dict[str, object]:
    """fp32 and every lever's int8 file, each as a function of a batch that gives its logits."""
    fp32, size = folder / "model.onnx", contract.read(folder).preprocessing.crop.size
    batches = calibration(ExportSpec(), size)
    files = {}
    for name, levers in LEVERS.items():
        files[name] = work / f"{len(files)}.onnx"
        to_int8(fp32, files[name], batches, **levers)
    found = {"fp32": fp32, **files}
    sessions = {name: session(path, threads=threads, spinning=False) for name, path in found.items()}
    run = {name: (lambda x, s=s: s.run(["logits"], {INPUT: x})[0]) for name, s in sessions.items()}
    request = compile_model(files["weight zero point 0 (the VNNI recipe)"], "openvino-f32", threads)
    infer = request.create_infer_request()

    def run_ov(x: np.ndarray) -> np.ndarray:
        infer.infer({INPUT: x})
        return infer.get_tensor("logits").data.copy()

    run[OPENVINO] = run_ov
    return run


def study(folder: Path, photos: Path | None, rounds: int) -> dict:
    """Per lever: wall and CPU ms per image and the paired ratio to fp32 at each batch size, and top-1 agreement."""
    threads = ThreadPlan.make("in-process").runtime
    size = contract.read(folder).preprocessing.crop.size
    with tempfile.TemporaryDirectory() as tmp:
        run = runners(folder, Path(tmp), threads)
        timing: dict[str, dict[int, list]] = {name: {b: [] for b in BATCHES} for name in run}
        for _ in range(rounds):
            for batch in BATCHES:
                x = images((batch, size, size), seed=7)
                for name, call in run.items():  # fp32 first in every round: each ratio is paired within it
                    timing[name][batch].append(timed(call, x, min_time=0.3))
        checks = [images((32, size, size), seed=2026 + i) for i in range(GENERATED // 32)]
        pictures = [p[None] for p in photo_variants(photos, size)] if photos else []
        reference = [run["fp32"](x).argmax(1) for x in checks + pictures]
        rows = {
            name: _row(timing, name, [call(x).argmax(1) for x in checks + pictures], reference, len(checks))
            for name, call in run.items()
        }
    return {"threads": threads, "size": size, "rows": rows, "photos": len(pictures)}


def _row(timing: dict, name: str, top1: list, reference: list, generated: int) -> dict:
    row: dict = {}
    for batch in BATCHES:
        mine, base = timing[name][batch], timing["fp32"][batch]
        row[f"wall ms, batch {batch}"] = statistics.median(w for w, _ in mine) * 1e3 / batch
        row[f"× fp32 wall, batch {batch}"] = statistics.median(b[0] / m[0] for m, b in zip(mine, base, strict=True))
        row[f"× fp32 CPU, batch {batch}"] = statistics.median(b[1] / m[1] for m, b in zip(mine, base, strict=True))
    same = [np.mean(a == b) for a, b in zip(top1, reference, strict=True)]
    row["top-1 generated"] = float(np.mean(same[:generated]))
    row["top-1 photos"] = float(np.mean(same[generated:])) if len(same) > generated else None
    return row


def table(folder: Path, found: dict) -> str:
    head = next(iter(found["rows"].values())).keys()
    lines = [
        f"# int8 levers on {machine()} ({', '.join(cpu_isa())})",
        "",
        f"`python -m export.int8_levers {folder.name}`: onnxruntime {ort.__version__}, "
        f"{found['threads']} intra-op threads, idle threads sleeping, {found['size']}×{found['size']} input, "
        f"{found['photos']} photo variants. On this CPU `to_int8` adopts the "
        f"{'AMX' if has_amx() else 'VNNI'} recipe. Ratios: the median of the rounds' paired ratios.",
        "",
        "| lever | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
    ]
    for name, row in found["rows"].items():
        cells = ["–" if v is None else f"{v:.1%}" if k.startswith("top-1") else f"{v:.2f}" for k, v in row.items()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an fp32 export (model.onnx + model.json)")
    parser.add_argument("--photos", type=Path, help="real photos for the top-1 agreement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the table here too (markdown)")
    args = parser.parse_args()
    text = table(args.folder, study(args.folder, args.photos, args.rounds))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
