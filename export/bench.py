"""In-process benchmark: eager torch vs onnxruntime fp32 vs int8, and export cost of the largest net.

    python -m export.bench OUT_DIR PHOTO_DIR     (run by `make bench`; writes OUT_DIR/inprocess.json)

Every figure is a median over repeated runs, all measured side by side in this one process.
"""

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tqdm import tqdm

import contract
import models
from contract.pixels import prepare_image
from models.shapes import sample

from .graph import ServingGraph
from .parity import images
from .pipeline import ExportSpec, run
from .session import session
from .speed import median_seconds
from .variants import OPS, has_amx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "default_model"
BATCHES = (1, 8, 32)


def compare_engines(name: str, model: torch.nn.Module, onnx: dict[str, Path], size: int) -> list[dict]:
    graph = ServingGraph(model).eval()
    sessions = {p: session(f) for p, f in onnx.items()}
    rows = []
    for batch in tqdm(BATCHES, desc=f"{name} in-process", unit="batch size"):
        x = images((batch, size, size))
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            times = {"torch": median_seconds(lambda tx=tx: graph(tx))}
        for precision, sess in sessions.items():
            times[f"onnxruntime {precision}"] = median_seconds(lambda s=sess, x=x: s.run(["logits"], {"pixels": x}))
        for engine, seconds in times.items():
            rows.append(
                {
                    "model": name,
                    "engine": engine,
                    "batch": batch,
                    "size": size,
                    "ms_per_batch": seconds * 1e3,
                    "images_per_s": batch / seconds,
                }
            )
    return rows


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    """Floating-point operations of one ``size``² image (torch's counter: two per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def sgemm_gflops(n: int = 2048) -> float:
    """GFLOPS of one n×n fp32 matrix product in onnxruntime, in a session as the ones here (default threads): the
    roof that the fp32 convolutions work under on this machine."""
    weight = numpy_helper.from_array(np.random.default_rng(0).random((n, n), np.float32), "w")
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "sgemm", io[:1], io[1:], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = session(model.SerializeToString())
    x = np.ones((n, n), np.float32)
    return 2 * n**3 / median_seconds(lambda: sess.run(None, {"x": x})) / 1e9


def agreement(fp32: Path, int8: Path, n: int = 400) -> float:
    """Top-1 agreement of int8 with fp32 on fresh default-model test images."""
    rng = np.random.default_rng(2718)
    a, b = session(fp32), session(int8)
    same = 0
    for _ in range(n):
        x = np.asarray(sample(rng, size=(int(rng.integers(112, 337)), 112)).image)[None]
        same += int(a.run(["logits"], {"pixels": x})[0].argmax() == b.run(["logits"], {"pixels": x})[0].argmax())
    return same / n


def agreement_photos(folder: Path, int8: Path, photos: list[Path]) -> float:
    """Top-1 agreement of int8 with fp32 on real photos, prepared as the service's ``crop`` policy does."""
    pre = contract.read(folder).preprocessing
    a, b = session(folder / "model.onnx"), session(int8)
    same = 0
    for path in photos:
        x = prepare_image(Image.open(path), pre, "crop").pixels[None]
        same += int(a.run(["logits"], {"pixels": x})[0].argmax() == b.run(["logits"], {"pixels": x})[0].argmax())
    return same / len(photos)


def export_cost(variant: str, work: Path) -> dict:
    """Wall time and peak resident memory of one CLI export, in a child process."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "export", variant, "--random-init", "--no-store", "--reference-images", "0"]
    cmd += ["--output", str(work)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"variant": variant, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_kb / 1024}


def fresh(int8: Path) -> bool:
    """Whether a cached int8 export was made with today's recipe on a CPU like this one."""
    if not (int8 / "model.json").is_file():
        return False
    recipe = contract.read(int8).quantization
    return recipe is not None and recipe["ops"] == OPS and recipe["weight_zero_point"] == int(has_amx())


def main(out: Path, photos: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = out / "models"
    if not fresh(work / "resnet50-int8"):
        # parity on the five default shapes, ≥ 512 px among them
        spec = ExportSpec(
            variant="resnet50",
            random_init=True,
            precisions=("fp32", "int8"),
            output=work,
            to_store=False,
            reference_images=0,
        )
        run(spec)
    r50 = models.create("resnet50").eval()  # timing only: its weights need not be the exported ones
    shapes = models.load_checkpoint(models.create("resnet10_shapes", num_classes=6), DEFAULT / "weights.safetensors")
    rows = compare_engines(
        "resnet50", r50, {"fp32": work / "resnet50" / "model.onnx", "int8": work / "resnet50-int8" / "model.onnx"}, 224
    )
    default = {
        "fp32": DEFAULT / "shapes-resnet10" / "model.onnx",
        "int8": DEFAULT / "shapes-resnet10-int8" / "model.onnx",
    }
    rows += compare_engines("shapes-resnet10", shapes.eval(), default, 112)
    result = {
        "rows": rows,
        "int8_agreement_default": agreement(default["fp32"], default["int8"]),
        "int8_agreement_photos": agreement_photos(work / "resnet50", work / "resnet50-int8" / "model.onnx", photos),
        "photos": len(photos),
        "resnet50_flops": flops_per_image(r50, 224),
        "sgemm_gflops": sgemm_gflops(),
        "int8_recipe": contract.read(work / "resnet50-int8").quantization,
        "export_cost": export_cost("wide_resnet101_2", out / "export-cost"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }
    (out / "inprocess.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'inprocess.json'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sorted(Path(sys.argv[2]).iterdir()))
