"""``python -m export VARIANT [options]``: from a registered variant or checkpoint to a served model.

Exit status: 0 saved; 2 refused (unknown variant, no weights, bad option); 3 unreadable or
mismatched checkpoint; 4 parity tolerance exceeded (nothing saved).
"""

import argparse
import json
import sys
from pathlib import Path

import models

from .parity import TOLERANCE
from .pipeline import ExportError, ExportSpec, run


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("variant", nargs="?", help=f"registered variant: {', '.join(models.list_models())}")
    p.add_argument("--weights", type=Path, help="checkpoint: torchvision .pth or .safetensors")
    p.add_argument("--random-init", action="store_true", help="export untrained weights (marked untrained)")
    p.add_argument("--num-classes", type=int, help="classes of the head (default: the variant's)")
    p.add_argument("--labels", type=Path, help="one class name per line (default: ImageNet's for 1000)")
    p.add_argument("--name", help="model-store name (default: the variant)")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "fp16", "int8"],
        help="one or more of fp32 fp16 int8 (default fp32); each is its own store entry",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, ≥ 18 (default 18)")
    p.add_argument("--policy", choices=["crop", "full"], default="crop", help="default resize policy")
    p.add_argument("--crop-resize", type=int, help="crop policy: shorter side before the crop")
    p.add_argument("--crop-size", type=int, help="crop policy: square crop (default: model's input size)")
    p.add_argument("--short-side", type=int, help="full policy: shorter side (multiple of 32)")
    p.add_argument("--max-long-side", type=int, help="full policy: cap on the longer side (default 3×short)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE["fp32"], help="fp32 max relative logit error")
    p.add_argument("--calibration-dir", type=Path, help="int8: folder of calibration images (default: shapes)")
    p.add_argument("--calibration-images", type=int, default=256, help="int8: images to calibrate on (256)")
    p.add_argument("--photos", type=Path, help="real photos for the CPU runtimes' top-1 agreement (optional)")
    p.add_argument("--no-runtimes", action="store_true", help="skip timing OpenVINO beside onnxruntime")
    p.add_argument("--reference-dir", type=Path, help="reference images for the OOD score (default: shapes)")
    p.add_argument("--reference-images", type=int, default=1000, help="reference images to use (1000; 0: none)")
    p.add_argument("--training-record", type=Path, help="JSON stored as the model's 'training' metadata")
    p.add_argument("--output", type=Path, help="also write <name>[-precision]/model.onnx + model.json here")
    p.add_argument("--no-store", action="store_true", help="do not write to the BentoML model store")
    g = p.add_argument_group("ad-hoc architecture (instead of a variant)")
    g.add_argument("--arch", choices=["resnet"], help="build a ResNet from the options below")
    g.add_argument("--block", choices=["basic", "bottleneck"], default="bottleneck")
    g.add_argument("--layers", type=_ints, default=[2, 2, 2, 2], help="blocks per stage, e.g. 3,4,6,3")
    g.add_argument("--groups", type=int, default=1, help="cardinality (ResNeXt)")
    g.add_argument("--width-per-group", type=int, default=64, help="64 plain, 128 wide, 4 with 32 groups")
    g.add_argument("--avg-down", action="store_true", help="ResNet-D average-pool shortcut")
    return p


def spec_from_args(args: argparse.Namespace) -> ExportSpec:
    if args.opset < 18:
        raise ExportError(f"--opset {args.opset} is below 18")
    if (args.variant is None) == (args.arch is None):
        raise ExportError("give exactly one of VARIANT or --arch")
    arch = None
    if args.arch:
        arch = {
            "block": args.block,
            "layers": args.layers,
            "groups": args.groups,
            "width_per_group": args.width_per_group,
            "avg_down": args.avg_down,
        }
    labels = args.labels.read_text().splitlines() if args.labels else None
    record = json.loads(args.training_record.read_text()) if args.training_record else None
    return ExportSpec(
        variant=args.variant,
        arch=arch,
        num_classes=args.num_classes,
        weights=args.weights,
        random_init=args.random_init,
        labels=labels,
        name=args.name,
        precisions=tuple(args.precision),
        opset=args.opset,
        policy=args.policy,
        crop_resize=args.crop_resize,
        crop_size=args.crop_size,
        short_side=args.short_side,
        max_long_side=args.max_long_side,
        tolerance=args.tolerance,
        calibration_dir=args.calibration_dir,
        calibration_images=args.calibration_images,
        photos=args.photos,
        runtimes=not args.no_runtimes,
        reference_dir=args.reference_dir,
        reference_images=args.reference_images,
        training_record=record,
        output=args.output,
        to_store=not args.no_store,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(spec_from_args(args))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
