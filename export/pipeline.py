"""One export, stage by stage: build → load weights → ONNX → check → parity → variants → save."""

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from PIL import Image
from torch import nn

import contract
import models
from contract.metadata import PRECISIONS, ModelMetadata, Speed
from models.resnet import BasicBlock, Bottleneck, ResNet

from . import reference, runtimes, store
from .graph import IMAGENET_MEAN, IMAGENET_STD, INPUT, OUTPUTS, ServingGraph, export_onnx
from .parity import TOLERANCE, default_shapes, images, parity_report, rule_for
from .speed import measure
from .speed import notes as speed_notes
from .variants import to_fp16, to_int8

IMAGENET_LABELS = Path(__file__).with_name("imagenet_classes.txt")  # torchvision's order


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
    runtimes: bool = True  # measure OpenVINO beside onnxruntime (a few seconds to a minute)
    photos: Path | None = None  # real photos for the CPU runtimes' top-1 agreement
    reference_dir: Path | None = None  # the out-of-distribution score's images (else shapes for the default model)
    reference_images: int = 1000  # 0: no reference statistics, no score
    training_record: dict | None = None
    output: Path | None = None
    to_store: bool = True


def _stage(message: str) -> float:
    print(f"» {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(
        f"  done in {time.perf_counter() - started:.1f}s {detail}".rstrip(),
        file=sys.stderr,
        flush=True,
    )


NO_REFERENCE = (
    "no reference statistics, so no out-of-distribution score: statistics from generated shapes describe only the "
    "default model, and would flag every real image of any other. Pass --reference-dir DIR (at least 40 images like "
    "those it will serve), or add them later: python -m export.reference FOLDER --images DIR"
)


def _warn(note: str) -> None:
    print(f"  warning: {note}", file=sys.stderr)


def build(spec: ExportSpec) -> tuple[nn.Module, str]:
    """The torch model and its architecture string, with weights loaded if given."""
    if spec.weights is None and not spec.random_init:
        raise ExportError("no --weights given: pass a checkpoint, or --random-init for an untrained model")
    with torch.random.fork_rng(devices=[]):
        # an untrained net's near-tied logits decide its int8 and bf16 agreement: the same net each time
        torch.manual_seed(0)
        return _build(spec)


def _build(spec: ExportSpec) -> tuple[nn.Module, str]:
    """build's body, under its seed: the architecture made, then its checkpoint or BatchNorm calibration."""
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
    """The given labels; ImageNet's for a 1000-class model (they ship with the repository); else class_i."""
    if spec.labels is not None:
        labels = spec.labels
    elif num_classes == 1000:
        labels = IMAGENET_LABELS.read_text().splitlines()
    else:
        labels = [f"class_{i}" for i in range(num_classes)]
        print(f"  no --labels: classes are named class_0 … class_{num_classes - 1}", file=sys.stderr)
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels given for a {num_classes}-class model")
    return labels


def convert(spec: ExportSpec, model: nn.Module, work: Path) -> tuple[dict[str, Path], dict | None]:
    """fp32 ONNX, then each requested variant of it: ({precision: file}, the int8 recipe); fp32 is always there."""
    files = {"fp32": work / "fp32.onnx"}
    t = _stage(f"export to ONNX (opset {spec.opset}, dynamic batch/height/width) and check")
    export_onnx(model, files["fp32"], opset=spec.opset)
    _done(t, f"({files['fp32'].stat().st_size / 1e6:.1f} MB)")
    if "fp16" in spec.precisions:
        t = _stage("convert to fp16")
        files["fp16"] = work / "fp16.onnx"
        to_fp16(files["fp32"], files["fp16"])
        _done(t)
    if "int8" in spec.precisions:
        t = _stage(f"quantise to int8 (QDQ, per-channel, {spec.calibration_images} calibration images)")
        files["int8"] = work / "int8.onnx"
        recipe = to_int8(files["fp32"], files["int8"], calibration(spec, model.default_input_size))
        _done(t, f"(weight zero point {recipe['weight_zero_point']}: for {recipe['for']})")
        return files, recipe | {"calibration_images": spec.calibration_images}
    return files, None


def check(spec: ExportSpec, model: nn.Module, precision: str, onnx_file: Path) -> tuple[dict, list[str]]:
    """The parity report of one precision and its notes; an fp32/fp16 export beyond tolerance is refused."""
    shapes = spec.parity_shapes or default_shapes(model.default_input_size)
    t = _stage(f"parity {precision} vs eager torch on {len(shapes)} shapes")
    report = parity_report(model, onnx_file, shapes, [images(s, seed=i) for i, s in enumerate(shapes)])
    rule = rule_for(precision, spec.tolerance)
    report["tolerance"] = rule
    worst = report["worst"]
    _done(t, f"(max abs {worst['max_abs']:.2e}, max rel {worst['max_rel']:.2e}, top-1 {worst['top1']:.0%})")
    if rule["max_rel"] is not None and worst["max_rel"] > rule["max_rel"]:
        raise ExportError(
            f"{precision} parity failed: max relative error {worst['max_rel']:.3e} > tolerance {rule['max_rel']:.0e}",
            code=4,
        )
    if worst["top1"] < rule["min_top1"]:
        note = f"{precision} top-1 agrees with fp32 torch on {worst['top1']:.0%} of the images of its worst"
        note += f" parity shape (< {rule['min_top1']:.0%})"
        _warn(note)
        return report, [note]
    return report, []


def describe(spec: ExportSpec, model: nn.Module, arch: str) -> dict:
    """The metadata every precision of this export shares."""
    head = model.get_classifier()
    k, c = head.out_features, head.in_features
    return {
        "architecture": arch,
        "num_classes": k,
        "labels": labels_for(spec, k),
        "preprocessing": preprocessing(spec, model),
        "min_input_size": model.min_input_size,
        "feature_stride": model.feature_stride,
        "embedding_dim": c,
        "input": {"name": INPUT, "dtype": "uint8", "layout": "NHWC", "shape": ["batch", "height", "width", 3]},
        "outputs": {
            OUTPUTS[0]: ["batch", k],
            OUTPUTS[1]: ["batch", c],
            OUTPUTS[2]: ["batch", c, "height/stride", "width/stride"],
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
        "training": spec.training_record,
    }


def package(folder: Path, onnx_file: Path, head: nn.Linear, meta: ModelMetadata) -> Path:
    """One store-ready folder: model.onnx, head.npz, model.json."""
    folder.mkdir()
    shutil.move(onnx_file, folder / "model.onnx")
    np.savez(folder / "head.npz", weight=head.weight.detach().numpy(), bias=head.bias.detach().numpy())
    contract.write(folder, meta)
    return folder


def save(spec: ExportSpec, written: list[Path]) -> list[Path]:
    """Into the BentoML model store and/or --output; returns the folders a user should look at."""
    t = _stage("save")
    saved = [store.save(f) for f in written] if spec.to_store else []
    if spec.output is not None:
        spec.output.mkdir(parents=True, exist_ok=True)
        for folder in written:
            shutil.copytree(folder, spec.output / folder.name, dirs_exist_ok=True)
    folders = [spec.output / f.name for f in written] if spec.output else [Path(m.path) for m in saved]
    _done(t, " ".join(str(m.tag) for m in saved) + " " + " ".join(map(str, folders)))
    return folders


def compare_speed(files: dict[str, Path], size: int) -> tuple[Speed | None, dict[str, list[str]]]:
    """Every precision timed side by side here (which one to serve on this CPU is a measurement), and the
    warnings per precision; nothing to compare for fp32 alone."""
    if len(files) == 1:
        return None, {}
    t = _stage(f"speed of {', '.join(files)} on this CPU, side by side")
    speed = measure(files, size)
    _done(t, " ".join(f"{p} {ms[-1]:.2f}" for p, ms in speed.ms_per_image.items()) + " ms/image (batch 8)")
    slower = speed_notes(speed)
    for note in (n for notes in slower.values() for n in notes):
        _warn(note)
    return speed, slower


def run(spec: ExportSpec) -> list[Path]:
    """Export every requested precision; returns the folders written (--output, else the store's)."""
    t = _stage(f"build {spec.variant or 'ad-hoc ResNet'}")
    model, arch = build(spec)
    shared = describe(spec, model, arch)
    name = spec.name or spec.variant or "custom-resnet"
    _done(t, f"({shared['parameters']:,} parameters)")
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        work = Path(tmp)
        files, recipe = convert(spec, model, work)
        checked = {p: check(spec, model, p, files[p]) for p in PRECISIONS if p in files and p in spec.precisions}
        speed, slower = compare_speed(files, model.default_input_size)
        written, pixels = [], None
        scored = spec.reference_images and (spec.reference_dir or spec.variant == reference.SHAPES_MODEL)
        if spec.reference_images and not scored:
            _warn(NO_REFERENCE)
        for precision, (report, notes) in checked.items():
            entry = name if precision == "fp32" else f"{name}-{precision}"
            notes = [*notes, *slower.get(precision, [])]
            meta = ModelMetadata(
                name=entry,
                **shared,
                precision=precision,
                parity=report,
                speed=speed,
                notes=notes,
                quantization=recipe if precision == "int8" else None,
            )
            written.append(package(work / entry, files[precision], model.get_classifier(), meta))
            if spec.runtimes and precision != "fp16":  # a CPU precision: the record RESNET_RUNTIME=auto reads
                t = _stage(f"OpenVINO beside onnxruntime on {precision}")
                found = runtimes.record(written[-1], spec.photos)
                _done(t, " ".join(f"{r.name} {r.speedup():.2f}× top-1 {r.top1:.1%}" for r in found))
            if scored:
                t = _stage(f"reference statistics of {precision} for the out-of-distribution score")
                pre, n = meta.preprocessing, spec.reference_images
                pixels = pixels or reference.reference_pixels(pre, spec.reference_dir, n, seed=7)
                r = reference.add(written[-1], *pixels)
                _done(t, f"({r.components} Gaussians on {r.source}; threshold {r.threshold:.3f})")
        return save(spec, written)
