"""A model version's raw graph as an Open Inference Protocol model: ``pixels`` (UINT8 [N, H, W, 3]) in;
``logits``, ``embedding`` and ``features`` out, as Triton serving the same ONNX answers."""

import numpy as np

from contract import ModelMetadata

from ..errors import ApiError
from ..protocol.server import only, parameters
from .interface import OUTPUTS, SPARE, Engine, Item

MAX_TENSOR_IMAGES = 1024  # images in one tensor-model request


class TensorModel:
    """The raw graph of one model version, on the engine (in this process or behind another protocol server)."""

    outputs = OUTPUTS

    def __init__(self, tag: str, meta: ModelMetadata, engine: Engine, max_pixels: int) -> None:
        self.tag, self.meta, self.engine, self.max_pixels = tag, meta, engine, max_pixels

    async def metadata(self) -> dict:
        c, k = self.meta.embedding_dim, self.meta.num_classes
        provider = (await self.engine.providers()).get(self.tag)
        return {
            "name": self.meta.name,
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, k]},
                {"name": "embedding", "datatype": "FP32", "shape": [-1, c]},
                {"name": "features", "datatype": "FP32", "shape": [-1, c, -1, -1]},
            ],
            "parameters": {
                "min_input_size": self.meta.min_input_size,
                "precision": self.meta.precision,
                "provider": provider,
            },
        }

    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        pixels, side = only(tensors, "pixels", "UINT8 [N, H, W, 3]"), self.meta.min_input_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise ApiError(400, "bad_inputs", "send one input, pixels: UINT8 [N, H, W, 3]")
        n, h, w, _ = pixels.shape
        if not 1 <= n <= MAX_TENSOR_IMAGES or min(h, w) < side or h * w > self.max_pixels:
            limits = f"N from 1 to {MAX_TENSOR_IMAGES}, sides ≥ {side}, at most {self.max_pixels:,} pixels an image"
            raise ApiError(400, "bad_inputs", f"pixels {list(pixels.shape)}: {limits}")
        priority = parameters(request).get("priority")
        spare = isinstance(priority, int) and priority >= SPARE  # a front's shadow copy, or a client's choice
        results = await self.engine.infer([Item(self.tag, image, names, spare) for image in pixels])
        params = {"model_ms": max(r.model_ms for r in results), "batch_size": max(r.batch_size for r in results)}
        return {o: np.stack([r.outputs[o] for r in results]) for o in names}, params
