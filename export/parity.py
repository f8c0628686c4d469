"""Parity of an ONNX file against eager PyTorch: max abs/rel error and top-k agreement per shape."""

import numpy as np
import torch
from torch import nn

from .graph import INPUT, ServingGraph
from .session import session

# Logits error, relative to the largest |logit| of the reference, above which an export fails.
# fp32 kernels differ only in summation order: ~1e-6 on trained nets, up to ~2e-4 on untrained
# 150-layer nets, whose small logits amplify rounding; fp16 keeps ~3 significant digits.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
# int8 logits differ from fp32 by design (0.39 of the largest logit on the default model, every top-1
# kept), so int8 is judged by its top-1 agreement; below it the export warns rather than refuses.
MIN_TOP1 = {"fp32": 0.0, "fp16": 0.0, "int8": 0.99}


def rule_for(precision: str, fp32_tolerance: float = TOLERANCE["fp32"]) -> dict:
    """The parity rule one precision is held to, as written into its report."""
    max_rel = fp32_tolerance if precision == "fp32" else TOLERANCE.get(precision)
    rule = "max |onnx - torch| / max |torch| over logits; top-1 agreement with torch over the images"
    return {"max_rel": max_rel, "min_top1": MIN_TOP1[precision], "rule": rule}


def default_shapes(size: int) -> list[tuple[int, int, int]]:
    """Five (batch, height, width): square, batch > 1, non-square, not a multiple of 32, ≥ 512."""
    return [
        (1, size, size),
        (4, size, size),
        (2, round(size * 0.79), round(size * 1.34)),
        (1, size + 13, size + 45),
        (1, max(512, 2 * size), max(384, round(1.5 * size))),
    ]


def images(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Real-looking uint8 NHWC test images (generated shapes) of one shape."""
    from models.shapes import sample

    rng = np.random.default_rng(seed)
    b, h, w = shape
    return np.stack([np.asarray(sample(rng, size=(w, h)).image) for _ in range(b)])


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Errors of ``got`` logits against ``ref`` logits, and top-1/top-5 agreement."""
    err = np.abs(ref.astype(np.float64) - got)
    k = min(5, ref.shape[1])
    top_ref, top_got = np.argsort(-ref, 1)[:, :k], np.argsort(-got, 1)[:, :k]
    return {
        "max_abs": float(err.max()),
        "max_rel": float(err.max() / max(np.abs(ref).max(), 1e-12)),
        "top1": float(np.mean(top_ref[:, 0] == top_got[:, 0])),
        "top5": float(np.mean([set(a) == set(b) for a, b in zip(top_ref, top_got, strict=True)])),
    }


@torch.no_grad()
def parity_report(
    model: nn.Module,
    onnx_path,
    shapes: list[tuple[int, int, int]],
    batches: list[np.ndarray] | None = None,
) -> dict:
    """Run eager torch and onnxruntime on the same uint8 images; one entry per shape plus the worst."""
    graph = ServingGraph(model).eval()
    sess = session(onnx_path)
    rows = []
    for i, shape in enumerate(shapes):
        x = batches[i] if batches else images(shape, seed=i)
        ref = graph(torch.from_numpy(x))[0].numpy()
        got = sess.run(["logits"], {INPUT: x})[0]
        rows.append({"shape": list(shape), **compare(ref, got)})
    worst = {
        "max_abs": max(r["max_abs"] for r in rows),
        "max_rel": max(r["max_rel"] for r in rows),
        "top1": min(r["top1"] for r in rows),
        "top5": min(r["top5"] for r in rows),
    }
    return {"reference": f"eager torch {torch.__version__} fp32", "shapes": rows, "worst": worst}
