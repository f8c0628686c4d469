"""fp16 (for GPUs) and int8 (QDQ static quantisation, for VNNI CPUs) variants of an fp32 ONNX file."""

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from .graph import INPUT


def to_fp16(src: Path, dst: Path) -> None:
    """Weights and compute in fp16; uint8 input and fp32 outputs kept for the service."""
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


class _Reader(CalibrationDataReader):
    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT: batch}


OPS = ["Conv", "Add", "MaxPool", "Relu"]  # Gemm (the head) stays float: 8-bit logits cost 3× the error, no speed


def has_amx() -> bool:
    """Whether this CPU has AMX-INT8 tiles (Sapphire Rapids and later), which onnxruntime's QGEMM path uses."""
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def amx_weights(model: onnx.ModelProto, zero_point: int = 1) -> dict:
    """Per-channel int8 weights with zero point +1 for every Conv: a non-zero weight zero point sends
    onnxruntime's QLinearConv to its QGEMM kernels (AMX where present) instead of the symmetric
    VNNI-only kernel; measured ResNet-50 batch 8 3.65× fp32 vs 3.21× with zero point 0."""
    weights = {i.name: i for i in model.graph.initializer}
    overrides = {}
    for node in (n for n in model.graph.node if n.op_type == "Conv"):
        w = numpy_helper.to_array(weights[node.input[1]])
        peak = np.abs(w.reshape(w.shape[0], -1)).max(1)
        overrides[node.input[1]] = [
            {"axis": 0, "scale": np.float32(max(a, 1e-8) / (127 - zero_point)), "zero_point": np.int8(zero_point)}
            for a in peak
        ]
    return overrides


def to_int8(src: Path, dst: Path, calibration: Iterable[np.ndarray], amx: bool | None = None, **levers: object) -> dict:
    """Static QDQ quantisation: int8 per-channel weights, uint8 activations, min/max calibration; returns the
    recipe (for the model's metadata). Each choice was measured on ResNet-50 (docs/int8_levers.md); ``levers``
    (quantize_static's keywords: reduce_range, weight_type, quant_format) are what export/int8_levers.py tries."""
    amx = has_amx() if amx is None else amx
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        first_conv = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Conv")
        options = {
            "quant_format": QuantFormat.QDQ,
            "per_channel": True,
            "activation_type": QuantType.QUInt8,  # S8 activations fall back to slow kernels on x86
            "weight_type": QuantType.QInt8,
            "op_types_to_quantize": OPS,  # with Relu: no float requantise pair between a conv and the next
            "calibrate_method": CalibrationMethod.MinMax,  # percentile/entropy: no better here, entropy clips
            # the in-graph preprocessing (cast, normalise, any per-image standardisation) stays float
            "nodes_to_exclude": [n.name for n in model.graph.node[:first_conv]],
            "extra_options": {"TensorQuantOverrides": amx_weights(model)} if amx else {},
        }
        quantize_static(str(pre), str(dst), _Reader(calibration), **(options | levers))
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
    return {
        "format": "QDQ",
        "activations": "uint8 per tensor",
        "weights": "int8 per channel",
        "weight_zero_point": 1 if amx else 0,
        "ops": OPS,
        "calibration": "MinMax",
        "for": "AMX-INT8 CPUs" if amx else "VNNI CPUs",
        **({"levers": {k: str(v) for k, v in levers.items()}} if levers else {}),
    }
