"""GPU check, in process: CUDA-provider parity against CPU and torch, fp32/fp16 throughput at batch 1–128.

    python -m export.gpu_check OUT_DIR [--allow-cpu]

Run by `make gpu-check` (loadtest.gpu_check), which then serves the exported models and adds the
HTTP figures. Exports ResNet-50 (untrained, BatchNorm calibrated) as fp32 and fp16 into
OUT_DIR/models and writes OUT_DIR/inprocess.json. Without a CUDA provider it refuses to run,
unless --allow-cpu (to try the script on a CPU machine).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import models

from .graph import INPUT, ServingGraph
from .parity import compare, images
from .pipeline import ExportSpec, build, run
from .session import session
from .speed import median_seconds

ROOT = Path(__file__).resolve().parents[1]
CUDA = "CUDAExecutionProvider"
SHAPES = [(1, 224, 224), (8, 224, 224), (2, 177, 301), (1, 513, 387)]
OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}  # as the service sets it


def card() -> dict:
    if not torch.cuda.is_available():
        return {"name": "none (CPU)", "torch_cuda": None}
    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "torch_cuda": torch.version.cuda}


def engines(files: dict[str, Path], has_cuda: bool) -> dict[str, ort.InferenceSession]:
    """onnxruntime sessions by name: CPU and CUDA (TF32 allowed, the default, and not) per precision."""
    out = {f"onnxruntime CPU {p}": session(f) for p, f in files.items()}
    if has_cuda:
        for p, f in files.items():
            out[f"onnxruntime CUDA {p}"] = session(f, [(CUDA, OPTIONS), "CPUExecutionProvider"])
        out["onnxruntime CUDA fp32, use_tf32=0"] = session(files["fp32"], [(CUDA, OPTIONS | {"use_tf32": "0"})])
    return out


def parity(model: torch.nn.Module, sessions: dict[str, ort.InferenceSession], device: str) -> list[dict]:
    """Every engine against eager torch fp32 on CPU (the reference), on the same uint8 images."""
    graph = ServingGraph(model).eval()
    rows = []
    for i, shape in enumerate(SHAPES):
        x = images(shape, seed=i)
        with torch.inference_mode():
            ref = graph(torch.from_numpy(x))[0].numpy()
            got = {f"torch {device} fp32 (TF32 off)": graph.to(device)(torch.from_numpy(x).to(device))[0].cpu().numpy()}
            graph.cpu()
        got |= {name: s.run(["logits"], {INPUT: x})[0] for name, s in sessions.items()}
        rows += [{"shape": list(shape), "engine": name, **compare(ref, y)} for name, y in got.items()]
    return rows


def throughput(model: torch.nn.Module, sessions: dict[str, ort.InferenceSession], device: str, batches) -> list[dict]:
    """Median time per batch of 224² uint8 images, logits copied back to the host."""
    graph = ServingGraph(model).eval().to(device)
    rows = []
    for batch in batches:
        x = images((1, 224, 224)).repeat(batch, 0)
        tx = torch.from_numpy(x).to(device)

        def eager(tx=tx) -> None:
            graph(tx)[0].cpu()

        with torch.inference_mode():
            times = {f"torch {device} eager fp32": median_seconds(eager)}
        for name, s in sessions.items():
            times[name] = median_seconds(lambda s=s, x=x: s.run(["logits"], {INPUT: x}))
        rows += [
            {"engine": e, "batch": batch, "ms_per_batch": t * 1e3, "images_per_s": batch / t} for e, t in times.items()
        ]
    return rows


def varying_batches(path: Path) -> dict:
    """Batch sizes 1–8 in turn, as a batching server makes them: one session vs one session per padded size."""
    sizes = [3, 1, 7, 2, 8, 5, 4, 6] * 2
    x = images((1, 224, 224)).repeat(8, 0)
    one = session(path, [(CUDA, OPTIONS)])
    fixed = {n: session(path, [(CUDA, OPTIONS)]) for n in (1, 2, 4, 8)}

    def unpadded() -> None:
        for n in sizes:
            one.run(["logits"], {INPUT: x[:n]})

    def padded() -> None:
        for n in sizes:
            size = next(m for m in fixed if m >= n)
            fixed[size].run(["logits"], {INPUT: x[:size]})

    return {
        "batch_sizes": sizes,
        "one_session_ms_per_call": median_seconds(unpadded, runs=3, min_time=0) / len(sizes) * 1e3,
        "padded_sessions_ms_per_call": median_seconds(padded, runs=3, min_time=0) / len(sizes) * 1e3,
    }


def bound_runner(
    sess: ort.InferenceSession, x: np.ndarray, n_classes: int, dim: int, stride: int = 32, device: str = "cuda"
):
    """A call with every input and output in fixed CUDA buffers (I/O binding), as CUDA graphs require;
    the logits are copied back to the host each call, as ``run`` does."""
    n, h, w = x.shape[:3]
    binding = sess.io_binding()
    binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
    shapes = {"logits": [n, n_classes], "embedding": [n, dim], "features": [n, dim, -(-h // stride), -(-w // stride)]}
    outputs = {k: ort.OrtValue.ortvalue_from_shape_and_type(v, np.float32, device, 0) for k, v in shapes.items()}
    for name, value in outputs.items():
        binding.bind_ortvalue_output(name, value)

    def call() -> np.ndarray:
        sess.run_with_iobinding(binding)
        return outputs["logits"].numpy()

    return call


# lever → extra CUDA provider options; all but the first two run with I/O binding
LEVERS = {
    "default": {},
    "prefer_nhwc": {"prefer_nhwc": "1"},
    "I/O binding": {},
    "CUDA graph": {"enable_cuda_graph": "1"},
    "CUDA graph + prefer_nhwc": {"enable_cuda_graph": "1", "prefer_nhwc": "1"},
}
UNBOUND = ("default", "prefer_nhwc")


def cuda_levers(path: Path, batches: list[int]) -> list[dict]:
    """fp16 ResNet-50 per CUDA provider option, one fixed-shape session each (as the service keeps them)."""
    rows = []
    for batch in batches:
        x = images((1, 224, 224)).repeat(batch, 0)
        for lever, extra in LEVERS.items():
            row = {"lever": lever, "batch": batch}
            try:
                sess = session(path, [(CUDA, OPTIONS | extra)])
                if lever in UNBOUND:
                    seconds = median_seconds(lambda s=sess, x=x: s.run(["logits"], {INPUT: x}))
                else:
                    seconds = median_seconds(bound_runner(sess, x, 1000, 2048))
                rows.append(row | {"ms_per_batch": seconds * 1e3, "images_per_s": batch / seconds})
            except Exception as exc:  # one lever failing must not cost the rest of an unattended run
                rows.append(row | {"error": f"{type(exc).__name__}: {exc}"[:400]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU when CUDA is unavailable")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--no-speed", action="store_true", help="parity only: no throughput, varying batches or levers")
    args = parser.parse_args()
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    has_cuda = CUDA in ort.get_available_providers() and torch.cuda.is_available()
    if not has_cuda and not args.allow_cpu:
        sys.exit(f"no CUDA: onnxruntime offers {ort.get_available_providers()}, torch.cuda {torch.cuda.is_available()}")
    device = "cuda" if has_cuda else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a strict fp32 reference
    torch.backends.cudnn.benchmark = True

    spec = ExportSpec(
        variant="resnet50",
        random_init=True,
        precisions=("fp32", "fp16"),
        output=args.out / "models",
        to_store=False,
        parity_shapes=[(2, 224, 224)],
        runtimes=False,  # the CPU runtimes' record: not what a GPU host serves on
        reference_images=0,
    )
    run(spec)
    model, _ = build(spec)  # the same weights again: build seeds an untrained net, calibrates on the same images
    folder = args.out / "models"
    r50 = {"fp32": folder / "resnet50" / "model.onnx", "fp16": folder / "resnet50-fp16" / "model.onnx"}
    r50 = engines(r50, has_cuda)
    default = engines({"fp32": ROOT / "default_model" / "shapes-resnet10" / "model.onnx"}, has_cuda)
    shapes = models.load_checkpoint(
        models.create("resnet10_shapes", num_classes=6), ROOT / "default_model" / "weights.safetensors"
    ).eval()
    for name, s in r50.items():
        if "CUDA" in name and s.get_providers()[0] != CUDA:
            sys.exit(f"{name}: onnxruntime offers CUDA but the session fell back to {s.get_providers()}")
    timed = {k: s for k, s in r50.items() if "CUDA" in k} or r50
    speed = has_cuda and not args.no_speed
    batches = [int(b) for b in args.batches.split(",")]
    result = {
        "card": card(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "parity": {"resnet50": parity(model, r50, device), "shapes-resnet10": parity(shapes, default, device)},
        "inprocess": [] if args.no_speed else throughput(model, timed, device, batches),
        "varying_batches": varying_batches(folder / "resnet50" / "model.onnx") if speed else None,
        "cuda_levers": cuda_levers(folder / "resnet50-fp16" / "model.onnx", [64, 128, 256]) if speed else None,
    }
    (args.out / "inprocess.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'inprocess.json'}")


if __name__ == "__main__":
    main()
