"""Seeded procedural images of geometric shapes, with bounding boxes: the default model's data.

Each sample is one filled shape at a random position, scale (15–80 % of the shorter side),
rotation and colour, on a flat, gradient, noisy or cluttered background, on a canvas of random
size (32–1024 px per side) and aspect ratio (1:3 to 3:1). numpy and Pillow only.
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "hexagon", "star", "cross")
BACKGROUNDS = ("flat", "gradient", "noise", "clutter")


@dataclass(frozen=True)
class Sample:
    image: Image.Image  # RGB
    label: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive-exclusive)

    @property
    def name(self) -> str:
        return CLASSES[self.label]


def _outline(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape whose circumscribed circle has radius ``r``."""
    if kind == "circle":
        points = [(r * math.cos(t), r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 64, False)]
    elif kind in ("square", "triangle", "hexagon"):
        n = {"square": 4, "triangle": 3, "hexagon": 6}[kind]
        points = [(r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n)) for i in range(n)]
    elif kind == "star":
        points = [
            (
                (r if i % 2 == 0 else 0.42 * r) * math.cos(math.pi * i / 5 - math.pi / 2),
                (r if i % 2 == 0 else 0.42 * r) * math.sin(math.pi * i / 5 - math.pi / 2),
            )
            for i in range(10)
        ]
    elif kind == "cross":
        a, b = 0.7 * r, 0.24 * r  # arm half-length and half-width: circumradius ≈ r
        points = [
            (b, a),
            (b, b),
            (a, b),
            (a, -b),
            (b, -b),
            (b, -a),
            (-b, -a),
            (-b, -b),
            (-a, -b),
            (-a, b),
            (-b, b),
            (-b, a),
        ]
    else:
        raise ValueError(f"unknown shape {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _background(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    base = _colour(rng)
    if kind == "gradient":
        other = _colour(rng)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        t = t[None, :, None] if len(t) == w else t[:, None, None]
        img = base * (1 - t) + other * t
        return np.broadcast_to(img, (h, w, 3)).copy()
    img = np.broadcast_to(base, (h, w, 3)).copy()
    if kind == "noise":
        img += rng.normal(0, rng.uniform(8, 40), (h, w, 1 if rng.random() < 0.5 else 3))
    return img


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    """Small distractors (lines and dots), none of which looks like a class shape."""
    side = min(w, h)
    for _ in range(rng.integers(5, 25)):
        colour = tuple(int(v) for v in _colour(rng))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.6:
            length, t = rng.uniform(0.03, 0.12) * side, rng.uniform(0, math.pi)
            width = max(1, int(0.008 * side))
            draw.line([(x, y), (x + length * math.cos(t), y + length * math.sin(t))], colour, width)
        else:
            d = max(1.0, rng.uniform(0.005, 0.02) * side)
            draw.ellipse([x - d, y - d, x + d, y + d], fill=colour)


def sample(
    rng: np.random.Generator,
    size: tuple[int, int] | None = None,
    label: int | None = None,
    scale: tuple[float, float] = (0.15, 0.8),
) -> Sample:
    """One random image; ``size`` = (width, height) fixes the canvas, ``label`` the class."""
    if size is None:
        short = math.exp(rng.uniform(math.log(32), math.log(1024)))
        aspect = math.exp(rng.uniform(-math.log(3), math.log(3)))
        w, h = short * max(aspect, 1), short * max(1 / aspect, 1)
        w, h = (int(np.clip(round(v), 32, 1024)) for v in (w, h))
    else:
        w, h = size
    label = int(rng.integers(len(CLASSES))) if label is None else label
    bg_kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    pixels = _background(rng, bg_kind, w, h)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if bg_kind == "clutter":
        _clutter(rng, draw, w, h)
    r = rng.uniform(*scale) * min(w, h) / 2
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    points = _outline(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
    mean = pixels.reshape(-1, 3).mean(0)
    colour = _colour(rng)
    while np.abs(colour - mean).sum() < 150:  # keep the shape visible against its background
        colour = _colour(rng)
    draw.polygon(points, fill=tuple(int(v) for v in colour))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(w, math.ceil(max(xs)) + 1),
        min(h, math.ceil(max(ys)) + 1),
    )
    return Sample(image, label, box)


BANDS = ((48, 96), (96, 224), (224, 512), (512, 1024))  # shorter-side ranges used in evaluation


def sample_in_band(rng: np.random.Generator, band: tuple[int, int], label: int | None = None) -> Sample:
    """A sample whose shorter side lies in ``band`` (aspect ratio 1:3 to 3:1, sides ≤ 1024)."""
    short = int(rng.integers(band[0], band[1] + 1))
    long = int(min(1024, short * math.exp(rng.uniform(0, math.log(3)))))
    size = (long, short) if rng.random() < 0.5 else (short, long)
    return sample(rng, size=size, label=label)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write generated shape images to a folder.")
    parser.add_argument("out", type=Path, help="folder to write <class>_<n>.png into")
    parser.add_argument("-n", type=int, default=60, help="number of images (default 60)")
    parser.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.n):
        s = sample(rng, label=i % len(CLASSES))
        s.image.save(args.out / f"{s.name}_{i:04d}.png")


if __name__ == "__main__":
    main()
