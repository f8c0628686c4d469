"""Encoded images as an Open Inference Protocol model, through the same path as ``/classify``.

An image model takes ``images`` (BYTES [N], as OpenVINO Model Server does) through the front's own
decoding, limits and resize policy, and returns ``probabilities`` (FP32 [N, K]) and the top-k
``labels`` (BYTES [N, k]); ``top_k`` and ``policy`` are request parameters. A model exported with reference
data also returns each image's out-of-distribution ``ood_score`` (FP32 [N]) and verdict ``out_of_distribution``
(BOOL [N]), as /classify does.
"""

import numpy as np

from contract import ModelMetadata

from ..errors import ApiError
from ..protocol.codec import bytes_array
from ..protocol.server import only, parameters
from .front import Front

OOD = {"ood_score": "FP32", "out_of_distribution": "BOOL"}  # outputs of a model exported with reference data


class ImageModel:
    """``{name}-image`` beside each version of the tensor model ``tag`` (name:version)."""

    def __init__(self, tag: str, meta: ModelMetadata, front: Front) -> None:
        self.name, self.tag, self.meta, self.front = f"{meta.name}-image", tag, meta, front
        self.top_k = min(5, meta.num_classes)  # when a request gives none
        self.outputs = ("probabilities", "labels") + (tuple(OOD) if meta.reference else ())

    async def metadata(self) -> dict:
        k = self.meta.num_classes
        return {
            "name": self.name,
            "platform": "resnet-serve_image",
            "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
                *({"name": o, "datatype": t, "shape": [-1]} for o, t in OOD.items() if o in self.outputs),
            ],
            "parameters": {
                "labels": self.meta.labels,
                "tensor_model": self.meta.name,
                "policy": self.meta.preprocessing.policy,
                "top_k": self.top_k,
                "request_parameters": ["top_k", "policy"],
            },
        }

    async def infer(self, request: dict, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[dict, dict]:
        images, most = only(tensors, "images", "BYTES [N] of encoded images"), self.front.settings.max_images
        if images.dtype != object or images.ndim != 1 or not 1 <= len(images) <= most:
            raise ApiError(400, "bad_images", f"images must be BYTES [N], N from 1 to {most}")
        params = parameters(request)
        top_k, policy = params.get("top_k", self.top_k), params.get("policy")
        if type(top_k) is not int or not isinstance(policy, str | None):
            raise ApiError(400, "bad_parameters", "top_k must be an integer and policy a string")
        encoded = [bytes(b) for b in images]
        policy, answers = await self.front.probabilities(self.tag, policy, top_k, encoded)
        probabilities = np.stack([a.probabilities for a in answers]).astype(np.float32)
        order = np.argsort(-probabilities, axis=1)[:, :top_k]
        labels = bytes_array([[self.meta.labels[i].encode() for i in row] for row in order])
        outputs = {"probabilities": probabilities, "labels": labels}
        if "ood_score" in self.outputs:
            outputs["ood_score"] = np.array([a.ood.score for a in answers], np.float32)
            outputs["out_of_distribution"] = np.array([a.ood.flagged for a in answers])
        return {o: outputs[o] for o in names}, {"policy": policy, "top_k": top_k}
