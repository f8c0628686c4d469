"""fp16 (for GPUs) and int8 (QDQ static quantisation, for VNNI CPUs) variants of an fp32 ONNX file."""

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
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


def to_int8(src: Path, dst: Path, calibration: Iterable[np.ndarray]) -> None:
    """Static QDQ quantisation: int8 per-channel weights, uint8 activations, min/max calibration."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        nodes = onnx.load(str(pre)).graph.node
        first_conv = next(i for i, n in enumerate(nodes) if n.op_type == "Conv")
        quantize_static(
            str(pre),
            str(dst),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add", "MaxPool", "GlobalAveragePool"],
            calibrate_method=CalibrationMethod.MinMax,
            # the in-graph preprocessing (cast, normalise, any per-image standardisation) stays float
            nodes_to_exclude=[n.name for n in nodes[:first_conv]],
        )
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
