"""The exported model's metadata (``model.json``) and the resize policies' geometry.

A field added here is added for both sides at once; ``contract/model.schema.json`` is generated from
these classes (``python -m contract``) and a test keeps it in step.
"""

import math
import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .reference import Reference

Policy = Literal["crop", "full"]
Precision = Literal["fp32", "fp16", "int8"]
POLICIES: tuple[str, ...] = Policy.__args__
PRECISIONS: tuple[str, ...] = Precision.__args__


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Crop(_Strict):
    """``crop``: shorter side to ``resize``, then the centre ``size`` × ``size`` (the ImageNet protocol)."""

    resize: int = Field(ge=1)
    size: int = Field(ge=1)

    def target(self, w: int, h: int) -> tuple[int, int]:
        scale = self.resize / min(w, h)
        return max(self.size, round(w * scale)), max(self.size, round(h * scale))


class Full(_Strict):
    """``full``: shorter side to ``short_side``, longer side to ``short_side`` + k·``multiple``, capped."""

    short_side: int = Field(ge=1)
    max_long_side: int = Field(ge=1)
    multiple: int = Field(32, ge=1)

    def target(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) of the bucket an image of ``w`` × ``h`` is resized to, aspect kept within ``multiple``."""
        short, m = self.short_side, self.multiple
        long = min(self.max_long_side, short + m * round((max(w, h) * short / min(w, h) - short) / m))
        return (long, short) if w >= h else (short, long)

    def longs(self) -> range:
        return range(self.short_side, self.max_long_side + 1, self.multiple)


class Preprocessing(_Strict):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    in_graph: bool = True
    policy: Policy
    crop: Crop
    full: Full

    def target(self, w: int, h: int, policy: Policy) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """(resize to (w, h), then centre crop (w, h) or None) for an image of ``w`` × ``h``."""
        if policy == "crop":
            return self.crop.target(w, h), (self.crop.size, self.crop.size)
        return self.full.target(w, h), None

    def buckets(self) -> list[tuple[int, int]]:
        """Every (height, width) the policies can produce: the crop square and the ``full`` buckets."""
        short, longs = self.full.short_side, self.full.longs()
        return sorted({(self.crop.size,) * 2} | {(short, n) for n in longs} | {(n, short) for n in longs})


class TensorSpec(_Strict):
    name: str
    dtype: str
    layout: str
    shape: list[int | str]


class Weights(_Strict):
    file: str
    sha256: str


class Speed(_Strict):
    """Milliseconds per image of each precision exported, measured side by side on the exporting machine."""

    machine: str
    threads: int
    size: int = Field(description="height = width of the images timed")
    batches: list[int]
    ms_per_image: dict[str, list[float]] = Field(description="precision → one median per batch size")


# The instruction sets that decide which CPU runtime and precision is fastest (bf16 and int8 matrix units).
ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo(key: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_isa() -> list[str]:
    """Which of ``ISA`` this CPU has: a runtime record applies to CPUs with the same set."""
    flags = set(_cpuinfo("flags").split())
    return [f for f in ISA if f in flags]


OPENVINO = {"openvino-bf16": "bf16", "openvino-f32": "f32"}  # a runtime record's name → OpenVINO's precision hint


def openvino_config(name: str, threads: int) -> dict:
    """How OpenVINO compiles a model for ``name``, for the export's record and the service alike: what is
    measured is what is served."""
    return {"INFERENCE_PRECISION_HINT": OPENVINO[name], "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}


class Runtime(_Strict):
    """Another CPU runtime run on this file at export, beside onnxruntime: how fast, and how far its answers move."""

    name: Literal["openvino-bf16", "openvino-f32"]
    version: str
    cpu: str = Field(description="the exporting CPU's model name, cores")
    isa: list[str] = Field(description="its instruction sets of note: the record holds for CPUs with the same")
    threads: int
    size: int = Field(description="height = width of the images timed")
    batches: list[int]
    ms_per_image: list[float] = Field(
        description="CPU-ms per image (every thread), calls 3 ms apart as a server's are; a median per batch size"
    )
    onnxruntime_ms_per_image: list[float] = Field(description="the same for onnxruntime on this file, interleaved")
    spread: float | None = Field(
        None, description="the speedup's run-to-run spread: (max - min) / median over the interleaved rounds"
    )
    max_rel: float = Field(description="max |logits - onnxruntime's| / max |onnxruntime's| on the parity shapes")
    top1: float = Field(description="top-1 agreement with onnxruntime on the parity images and 192 generated ones")
    top1_photos: float | None = Field(None, description="the same on real photos, when the export had some")
    photos: int = 0

    def speedup(self) -> float:
        """onnxruntime's CPU time over this runtime's, the geometric mean over the batch sizes up to 8 (those a
        served model mostly runs at; larger ones come only under saturation, and are reported, not weighed)."""
        pairs = zip(self.batches, self.onnxruntime_ms_per_image, self.ms_per_image, strict=True)
        ratios = [o / m for b, o, m in pairs if b <= 8] or [self.onnxruntime_ms_per_image[0] / self.ms_per_image[0]]
        return math.prod(ratios) ** (1 / len(ratios))


class ModelMetadata(_Strict):
    """One exported model: what it is, how to feed it, what it answers, and how it was checked."""

    name: str
    architecture: str
    num_classes: int = Field(ge=1)
    labels: list[str]
    preprocessing: Preprocessing
    min_input_size: int = Field(ge=1)
    feature_stride: int = Field(ge=1)
    embedding_dim: int = Field(ge=1)
    input: TensorSpec
    outputs: dict[str, list[int | str]]
    head: str = Field(description="file of the linear head's weight and bias (npz), beside model.onnx")
    opset: int
    parameters: int
    trained: bool
    weights: Weights | None
    exported: dict[str, str] = Field(description="when, and with which torch / onnx / onnxruntime")
    training: dict[str, Any] | None = Field(None, description="the training record, for a trained model")
    precision: Precision
    parity: dict[str, Any] = Field(description="errors against eager PyTorch per shape, and the rule applied")
    quantization: dict[str, Any] | None = Field(None, description="the int8 recipe, for an int8 model")
    speed: Speed | None = None
    runtimes: list[Runtime] = Field(default_factory=list, description="other CPU runtimes measured on this file")
    reference: Reference | None = Field(None, description="embedding statistics: the out-of-distribution score")
    notes: list[str] = Field(default_factory=list, description="the export's warnings about this model")

    @model_validator(mode="after")
    def _labels_match(self) -> "ModelMetadata":
        if len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.num_classes} classes")
        return self


def read(folder: Path) -> ModelMetadata:
    """``folder/model.json``, validated; a file that breaks the contract is refused with the field at fault."""
    return ModelMetadata.model_validate_json((Path(folder) / "model.json").read_bytes())


def write(folder: Path, meta: ModelMetadata) -> None:
    (Path(folder) / "model.json").write_text(meta.model_dump_json(indent=2) + "\n")
