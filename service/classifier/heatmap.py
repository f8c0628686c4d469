"""Class activation maps to numbers and pictures, with numpy and Pillow only."""

import base64
import io

import numpy as np
from PIL import Image

# A perceptually ordered colour ramp (dark blue → cyan → yellow → red), interpolated.
_STOPS = np.array([[0, 0, 0.5], [0, 0.4, 1], [0, 0.9, 0.9], [1, 0.9, 0], [1, 0.2, 0], [0.6, 0, 0]])


def cam(weight: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Zhou et al. (2016): one class's fc weights (C,) applied to the last feature map (C, h, w) → (h, w)."""
    return np.tensordot(weight, features, axes=(0, 0))


def normalise(cam: np.ndarray) -> np.ndarray:
    lo, hi = float(cam.min()), float(cam.max())
    return np.zeros_like(cam, np.float32) if hi - lo < 1e-12 else ((cam - lo) / (hi - lo)).astype(np.float32)


def upsample(cam01: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [0, 1] map to (width, height)."""
    return np.asarray(Image.fromarray(cam01, mode="F").resize(size, Image.BILINEAR))


def overlay_png(pixels: np.ndarray, cam01: np.ndarray, alpha: float = 0.5) -> str:
    """The heat map blended over the model's input image, as base64 PNG."""
    h, w = pixels.shape[:2]
    up = np.clip(upsample(cam01, (w, h)), 0, 1)
    pos = up * (len(_STOPS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_STOPS) - 2)
    frac = (pos - lo)[..., None]
    colour = (_STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac) * 255
    blended = (pixels * (1 - alpha) + colour * alpha).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(blended).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def peak(cam01: np.ndarray, frac: float = 0.8) -> tuple[float, float]:
    """(x, y) of a normalised map's peak, in cell units: the weighted centre of the cells within
    ``frac`` of the maximum, which localises better than one argmax cell of a coarse map."""
    weights = np.where(cam01 >= frac * cam01.max(), cam01, 0).astype(np.float64)
    ys, xs = np.indices(cam01.shape)
    total = weights.sum() or 1.0
    return float((xs * weights).sum() / total + 0.5), float((ys * weights).sum() / total + 0.5)
