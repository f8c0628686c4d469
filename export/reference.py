"""Reference statistics for the out-of-distribution score and drift gauge (contract/reference.py).

    python -m export.reference FOLDER [FOLDER ...] [--images DIR] [--evaluate PHOTOS]

Images come from a folder, else from the generated shapes the default model was trained on, resized as
the service resizes them. The Gaussians are fitted on three quarters; the thresholds are chosen on the
last quarter alone, never on the images used to test them (``evaluate``).
"""

import argparse
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import contract
from contract.metadata import ModelMetadata, Preprocessing
from contract.pixels import prepare_image
from contract.reference import QUANTILE, OodScore, Reference
from models.shapes import sample

from .session import session

SHAPES_MODEL = "resnet10_shapes"  # the one architecture trained on generated shapes: they are its reference
RANK = 128  # eigen-directions kept per Gaussian
MAX_COMPONENTS, MIN_IMAGES = 16, 20  # Gaussians: the most frequent predicted classes with enough images
SHRINKAGE = 0.05  # towards the average variance: a covariance from a few hundred images is noisy
WINDOW = 256  # the drift gauge's sliding window, per front worker
PHOTO_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def as_served(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """The uint8 pixels the service gives the model for ``img`` under the model's default policy (the service's
    own function: EXIF orientation, JPEG draft decoding and transparency as served)."""
    return prepare_image(img, pre, pre.policy).pixels


def shapes(n: int, seed: int) -> Iterator[Image.Image]:
    """The default model's training distribution (models/shapes.py): any size from 32 to 1024 px."""
    rng = np.random.default_rng(seed)
    return (sample(rng).image for _ in range(n))


def photos_of(folder: Path) -> list[Image.Image]:
    """The images directly in ``folder``, opened (not yet decoded), in name order."""
    return [Image.open(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in PHOTO_EXTENSIONS]


def folder_images(folder: Path, n: int) -> list[Image.Image]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PHOTO_EXTENSIONS)[:n]
    if len(files) < 2 * MIN_IMAGES:
        raise ValueError(f"{folder}: {len(files)} images; reference statistics need at least {2 * MIN_IMAGES}")
    return [Image.open(f) for f in files]


def outputs(onnx_file: Path, pixels: list[np.ndarray], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, K], embeddings [N, C]) in order, batched by shape as the service batches."""
    opened = session(onnx_file)
    logits, embeddings = [None] * len(pixels), [None] * len(pixels)
    by_shape: dict[tuple, list[int]] = {}
    for i, p in enumerate(pixels):
        by_shape.setdefault(p.shape, []).append(i)
    for idx in by_shape.values():
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            out = opened.run(["logits", "embedding"], {"pixels": np.stack([pixels[i] for i in part])})
            for j, i in enumerate(part):
                logits[i], embeddings[i] = out[0][j], out[1][j]
    return np.stack(logits), np.stack(embeddings)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def gaussian(z: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, the top ``rank`` eigenvectors as rows, their variances, the others' mean variance) of a shrunk
    covariance of the rows of ``z``."""
    mean = z.mean(0)
    cov = np.cov(z - mean, rowvar=False)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.trace(cov) / len(mean) * np.eye(len(mean))
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    residual = float(values[rank:].mean()) if rank < len(mean) else 1.0
    return mean, vectors[:, :rank].T, values[:rank], residual


def fit(logits: np.ndarray, embeddings: np.ndarray) -> OodScore:
    """One Gaussian per frequent predicted class (else one for all) over the square roots of the embeddings."""
    z = np.sqrt(np.maximum(embeddings, 0)).astype(np.float64)
    predicted = logits.argmax(1)
    classes, counts = np.unique(predicted, return_counts=True)
    frequent = [c for c, n in sorted(zip(classes, counts, strict=True), key=lambda cn: -cn[1]) if n >= MIN_IMAGES]
    groups = [z[predicted == c] for c in frequent[:MAX_COMPONENTS]] or [z]
    rank = min(RANK, z.shape[1])
    parts = [gaussian(g, rank) for g in groups]
    return OodScore(*(np.stack([p[i] for p in parts]) for i in range(4)))


def drift_threshold(scores: np.ndarray, window: int, seed: int = 0, draws: int = 4000) -> float:
    """The mean capped score of a window of in-distribution answers (drawn from ``scores``) stays under this 99.9 %
    of the time; plus twice the standard error of the held-out mean, the reference's own uncertainty."""
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(len(scores), size=(draws, window))].mean(1)
    return float(np.quantile(means, 0.999) + 2 * scores.std() / np.sqrt(len(scores)))


def reference(onnx_file: Path, pixels: list[np.ndarray], source: str) -> tuple[Reference, OodScore]:
    """Fit on the first three quarters of ``pixels``, choose the thresholds on the rest."""
    logits, embeddings = outputs(onnx_file, pixels)
    n_fit = len(pixels) * 3 // 4
    score = fit(logits[:n_fit], embeddings[:n_fit])
    held = score(embeddings[n_fit:])
    score.offset = float(np.median(held))
    held -= score.offset
    threshold = float(np.quantile(held, QUANTILE))
    top1 = softmax(logits).max(1)
    record = Reference(
        source=source,
        images=n_fit,
        held_out=len(pixels) - n_fit,
        model_sha256=hashlib.sha256(onnx_file.read_bytes()).hexdigest(),
        components=len(score.means),
        rank=score.basis.shape[1],
        shrinkage=SHRINKAGE,
        offset=score.offset,
        threshold=threshold,
        drift_window=WINDOW,
        drift_threshold=drift_threshold(np.minimum(held, threshold), WINDOW),
        label_frequencies=(np.bincount(logits.argmax(1), minlength=logits.shape[1]) / len(logits)).tolist(),
        top1_quantiles={f"p{q}": float(np.quantile(top1, q / 100)) for q in (5, 25, 50, 75, 95)},
    )
    return record, score


def add(folder: Path, pixels: list[np.ndarray], source: str) -> Reference:
    """Write ``reference.npz`` and the record into an export folder."""
    meta = contract.read(folder)
    record, score = reference(folder / "model.onnx", pixels, source)
    np.savez(folder / record.file, **score.arrays())
    contract.write(folder, meta.model_copy(update={"reference": record}))
    return record


def reference_pixels(
    pre: Preprocessing, images: Path | None, n: int, seed: int, per_photo: int = 0
) -> tuple[list[np.ndarray], str]:
    """The reference images as served, and a description of them for the record; with ``per_photo``, that many
    variants (``variants``) of each image of the folder instead of the images themselves."""
    if images is None:
        return [as_served(img, pre) for img in shapes(n, seed)], f"{n} generated shapes (models/shapes.py), seed {seed}"
    if per_photo:
        found = variants(photos_of(images), per_photo, seed)[:n]
        return [as_served(img, pre) for img in found], f"{len(found)} variants of the images of {images.name}/"
    found = folder_images(images, n)
    return [as_served(img, pre) for img in found], f"{len(found)} images of {images.name}/"


def variants(photos: list[Image.Image], per_photo: int = 12, seed: int = 0) -> list[Image.Image]:
    """Real-image variants: crops of 30–100 % of the frame, scales from 64 px to full size, flips, greyscale,
    JPEG re-encodes at quality 30–95."""
    rng, out = np.random.default_rng(seed), []
    for photo in photos:
        w, h = photo.size
        for _ in range(per_photo):
            f = rng.uniform(0.3, 1.0)
            cw, ch = max(1, int(w * f)), max(1, int(h * f))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = photo.convert("RGB").crop((left, top, left + cw, top + ch))
            scale = rng.uniform(64, max(img.size)) / max(img.size)
            img = img.resize((max(32, round(img.width * scale)), max(32, round(img.height * scale))))
            img = ImageOps.mirror(img) if rng.random() < 0.5 else img
            img = ImageOps.grayscale(img).convert("RGB") if rng.random() < 0.3 else img
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=int(rng.integers(30, 96)))
            out.append(Image.open(io.BytesIO(buffer.getvalue())))
    return out


def evaluate(folder: Path, photos: Path, n_shapes: int = 1000, seed: int = 987654) -> dict[str, float | int]:
    """The fraction flagged of fresh shapes (a seed the reference never used) and of real photos and variants."""
    meta: ModelMetadata = contract.read(folder)
    if meta.reference is None:
        raise ValueError(f"{folder} has no reference statistics")
    score = OodScore.load(folder, meta.reference)
    originals = photos_of(photos)
    real = [*originals, *variants(originals)]
    flagged = {}
    for name, images in (("shapes", list(shapes(n_shapes, seed))), ("real", real)):
        _, embeddings = outputs(folder / "model.onnx", [as_served(img, meta.preprocessing) for img in images])
        flagged[name] = float((score(embeddings) > meta.reference.threshold).mean())
        flagged[f"{name}_images"] = len(images)
    return flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, help="reference images (default: generated shapes)")
    parser.add_argument("-n", type=int, default=4000, help="reference images to use")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", type=int, default=0, metavar="K", help="use K crops and variants of each image")
    parser.add_argument("--evaluate", type=Path, metavar="PHOTOS", help="report the flagged fractions only")
    args = parser.parse_args()
    made: dict[Preprocessing, tuple[list[np.ndarray], str]] = {}  # an int8 file shares its fp32 file's images
    for folder in args.folders:
        if args.evaluate:
            print(folder.name, evaluate(folder, args.evaluate))
            continue
        pre = contract.read(folder).preprocessing
        made[pre] = made.get(pre) or reference_pixels(pre, args.images, args.n, args.seed, args.variants)
        r = add(folder, *made[pre])
        print(f"{folder.name}: {r.components} Gaussians, threshold {r.threshold:.3f}, drift {r.drift_threshold:.3f}")


if __name__ == "__main__":
    main()
