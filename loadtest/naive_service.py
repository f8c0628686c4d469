"""The baseline most tutorials ship: one service, one onnxruntime call per request, float numpy.

Served only by the benchmark (`make bench`), to show what the real service is measured against.
"""

import os

import bentoml
import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@bentoml.service(name="naive-resnet", workers=1)
class Naive:
    def __init__(self) -> None:
        self.session = ort.InferenceSession(os.environ["NAIVE_ONNX"], providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @bentoml.api
    def classify(self, image: Image.Image, top_k: int = 5) -> dict:
        img = image.convert("RGB")
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        x = (np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255 - MEAN) / STD
        logits = self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:top_k]
        return {"predictions": [{"index": int(i), "probability": float(probs[i])} for i in order]}
