"""The baseline most tutorials ship: one BentoML API, one onnxruntime call per request, no batching.

Served only by the benchmark (`make bench`) on the same ONNX graph as the service (NAIVE_MODEL: an
exported model's folder), to show what the real service is measured against.
"""

import json
import os
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort
from PIL import Image


@bentoml.service(name="naive-resnet", workers=1)
class Naive:
    def __init__(self) -> None:
        folder = Path(os.environ["NAIVE_MODEL"])
        self.crop = json.loads((folder / "model.json").read_text())["preprocessing"]["crop"]
        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    @bentoml.api
    def classify(self, image: Image.Image, top_k: int = 5) -> dict:
        img = image.convert("RGB")
        scale = self.crop["resize"] / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        size = self.crop["size"]
        left, top = (img.width - size) // 2, (img.height - size) // 2
        pixels = np.asarray(img.crop((left, top, left + size, top + size)))[None]
        logits = self.session.run(["logits"], {"pixels": pixels})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:top_k]
        return {"predictions": [{"index": int(i), "probability": float(probs[i])} for i in order]}
