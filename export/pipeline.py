"""One export, stage by stage: build → load weights → ONNX → check → parity → variants → save."""

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from PIL import Image
from torch import nn

import models
from models.resnet import BasicBlock, Bottleneck, ResNet

from . import store
from .graph import IMAGENET_MEAN, IMAGENET_STD, INPUT, OUTPUTS, ServingGraph, export_onnx
from .parity import TOLERANCE, default_shapes, images, parity_report
from .variants import to_fp16, to_int8

IMAGENET_LABELS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "imagenet_classes.txt"


class ExportError(Exception):
    """A refused export; ``code`` is the CLI's exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ExportSpec:
    variant: str | None = None
    arch: dict | None = None  # ad-hoc ResNet: block, layers, groups, width_per_group, ...
    num_classes: int | None = None
    weights: Path | None = None
    random_init: bool = False
    labels: list[str] | None = None
    name: str | None = None
    precisions: tuple[str, ...] = ("fp32",)
    opset: int = 18
    policy: str = "crop"
    crop_resize: int | None = None
    crop_size: int | None = None
    short_side: int | None = None
    max_long_side: int | None = None
    parity_shapes: list[tuple[int, int, int]] | None = None
    tolerance: float = TOLERANCE["fp32"]
    calibration_dir: Path | None = None
    calibration_images: int = 256
    training_record: dict | None = None
    output: Path | None = None
    to_store: bool = True
    extra: dict = field(default_factory=dict)


def _stage(message: str) -> float:
    print(f"» {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(
        f"  done in {time.perf_counter() - started:.1f}s {detail}".rstrip(),
        file=sys.stderr,
        flush=True,
    )


def build(spec: ExportSpec) -> tuple[nn.Module, str]:
    """The torch model and its architecture string, with weights loaded if given."""
    if spec.weights is None and not spec.random_init:
        raise ExportError("no --weights given: pass a checkpoint, or --random-init for an untrained model")
    kwargs = {} if spec.num_classes is None else {"num_classes": spec.num_classes}
    if spec.arch is not None:
        cfg = dict(spec.arch)
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[cfg.pop("block")]
        model, arch = ResNet(block, cfg.pop("layers"), **cfg, **kwargs), json.dumps(spec.arch)
    else:
        try:
            model, arch = models.create(spec.variant, **kwargs), spec.variant
        except KeyError as exc:
            raise ExportError(exc.args[0]) from None
    if spec.weights is not None:
        try:
            models.load_checkpoint(model, spec.weights)
        except (FileNotFoundError, models.CheckpointMismatch) as exc:
            raise ExportError(str(exc), code=3) from None
    else:
        calibrate_batchnorm(model)
    return model.eval(), arch


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: int = 2, size: int = 64) -> None:
    """Give an untrained net the BatchNorm statistics of real-looking images.

    With fresh running statistics (mean 0, variance 1) eval-mode BatchNorm normalises nothing, and
    a deep untrained net overflows (preact_resnet1001 reaches inf by block 260).
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    graph = ServingGraph(model).train()  # the same uint8 → normalised input the export sees
    for i in range(batches):
        graph(torch.from_numpy(images((8, size, size), seed=500 + i)))
    model.eval()


def preprocessing(spec: ExportSpec, model: nn.Module) -> dict:
    size = spec.crop_size or model.default_input_size
    short = spec.short_side or max(32, 32 * round(size / 32))
    return {
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "in_graph": True,
        "policy": spec.policy,
        "crop": {"resize": spec.crop_resize or round(size / 0.875), "size": size},
        "full": {
            "short_side": short,
            "max_long_side": spec.max_long_side or 3 * short,
            "multiple": 32,
        },
    }


def calibration(spec: ExportSpec, size: int) -> list[np.ndarray]:
    """uint8 batches for int8 calibration: a folder's images, or generated shapes."""
    n = spec.calibration_images
    if spec.calibration_dir is None:
        return [images((8, size, size), seed=1000 + i) for i in range(max(1, n // 8))]
    files = sorted(p for p in Path(spec.calibration_dir).iterdir() if p.is_file())[:n]
    if not files:
        raise ExportError(f"no calibration images in {spec.calibration_dir}")
    pics = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    return [np.stack(pics[i : i + 8]) for i in range(0, len(pics), 8)]


def labels_for(spec: ExportSpec, num_classes: int) -> list[str]:
    if spec.labels is not None:
        labels = spec.labels
    elif num_classes == 1000 and IMAGENET_LABELS.is_file():
        labels = IMAGENET_LABELS.read_text().splitlines()
    else:
        labels = [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels given for a {num_classes}-class model")
    return labels


def run(spec: ExportSpec) -> list[Path]:
    """Export every requested precision; returns the folders written (--output, else the store's)."""
    t = _stage(f"build {spec.variant or 'ad-hoc ResNet'}")
    model, arch = build(spec)
    head = model.get_classifier()
    num_classes = head.out_features
    labels = labels_for(spec, num_classes)
    name = spec.name or spec.variant or "custom-resnet"
    shapes = spec.parity_shapes or default_shapes(model.default_input_size)
    batches = [images(s, seed=i) for i, s in enumerate(shapes)]
    _done(t, f"({sum(p.numel() for p in model.parameters()):,} parameters)")

    work = Path(tempfile.mkdtemp(prefix="export-"))
    fp32 = work / "fp32.onnx"
    t = _stage(f"export to ONNX (opset {spec.opset}, dynamic batch/height/width) and check")
    export_onnx(model, fp32, opset=spec.opset)
    _done(t, f"({fp32.stat().st_size / 1e6:.1f} MB)")

    files = {"fp32": fp32}
    if "fp16" in spec.precisions:
        t = _stage("convert to fp16")
        to_fp16(fp32, files.setdefault("fp16", work / "fp16.onnx"))
        _done(t)
    if "int8" in spec.precisions:
        t = _stage(f"quantise to int8 (QDQ, per-channel, {spec.calibration_images} calibration images)")
        to_int8(
            fp32,
            files.setdefault("int8", work / "int8.onnx"),
            calibration(spec, model.default_input_size),
        )
        _done(t)

    base = {
        "architecture": arch,
        "num_classes": num_classes,
        "labels": labels,
        "preprocessing": preprocessing(spec, model),
        "min_input_size": model.min_input_size,
        "feature_stride": model.feature_stride,
        "embedding_dim": head.in_features,
        "input": {
            "name": INPUT,
            "dtype": "uint8",
            "layout": "NHWC",
            "shape": ["batch", "height", "width", 3],
        },
        "outputs": {
            OUTPUTS[0]: ["batch", num_classes],
            OUTPUTS[1]: ["batch", head.in_features],
            OUTPUTS[2]: ["batch", head.in_features, "height/stride", "width/stride"],
        },
        "head": "head.npz",
        "opset": spec.opset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained": spec.weights is not None,
        "weights": None
        if spec.weights is None
        else {"file": Path(spec.weights).name, "sha256": store.sha256(Path(spec.weights))},
        "exported": {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        **({"training": spec.training_record} if spec.training_record else {}),
        **spec.extra,
    }
    written = []
    for precision in ("fp32", "fp16", "int8"):
        if precision not in files or precision not in spec.precisions:
            continue
        t = _stage(f"parity {precision} vs eager torch on {len(shapes)} shapes")
        report = parity_report(model, files[precision], shapes, batches)
        tol = spec.tolerance if precision == "fp32" else TOLERANCE.get(precision)
        report["tolerance"] = {
            "max_rel": tol,
            "rule": "max |onnx - torch| / max |torch| over logits",
        }
        worst = report["worst"]
        _done(
            t,
            f"(max abs {worst['max_abs']:.2e}, max rel {worst['max_rel']:.2e}, top-1 {worst['top1']:.0%})",
        )
        if tol is not None and worst["max_rel"] > tol:
            shutil.rmtree(work)
            raise ExportError(
                f"{precision} parity failed: max relative error {worst['max_rel']:.3e} > tolerance {tol:.0e}",
                code=4,
            )
        entry = f"{name}-{precision}" if precision != "fp32" else name
        folder = work / entry
        folder.mkdir()
        shutil.move(files[precision], folder / "model.onnx")
        np.savez(
            folder / "head.npz",
            weight=head.weight.detach().numpy(),
            bias=head.bias.detach().numpy(),
        )
        meta = {"name": entry, **base, "precision": precision, "parity": report}
        (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        written.append(folder)

    t = _stage("save")
    saved = [store.save(f) for f in written] if spec.to_store else []
    if spec.output is not None:
        spec.output.mkdir(parents=True, exist_ok=True)
        for folder in written:
            shutil.copytree(folder, spec.output / folder.name, dirs_exist_ok=True)
    shutil.rmtree(work)
    folders = [spec.output / f.name for f in written] if spec.output else [Path(m.path) for m in saved]
    _done(t, " ".join(str(m.tag) for m in saved) + " " + " ".join(map(str, folders)))
    return folders
