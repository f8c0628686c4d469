"""Train the embedded default model (``resnet10_shapes``) on generated shapes, on CPU, seeded.

    python -m models.train_shapes            # the committed run: ~10 min on 2 cores

Images are drawn at random canvas sizes, then brought to the serving ``full`` policy's buckets
(shorter side 112, longer side 112 + k·32, at most 336), so the model learns what the
service will show it; batches are grouped by bucket and randomly rescaled, so accuracy holds
across input sizes.
"""

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from contract import Full

from .checkpoint import save_checkpoint
from .registry import create
from .shapes import BANDS, CLASSES, Sample, sample, sample_in_band

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OUT = Path(__file__).resolve().parents[1] / "default_model"


@dataclass
class TrainConfig:
    seed: int = 0
    train_samples: int = 24_000
    epochs: int = 7
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    short_side: int = 112
    max_long_side: int = 336
    eval_per_band: int = 300
    threads: int = 2


def to_bucket(s: Sample, cfg: TrainConfig) -> np.ndarray:
    """The sample resized as the service's ``full`` policy will resize it."""
    size = Full(short_side=cfg.short_side, max_long_side=cfg.max_long_side).target(*s.image.size)
    return np.array(s.image.resize(size, Image.BILINEAR))


def _make_chunk(args: tuple[TrainConfig, int, int]) -> list[tuple[np.ndarray, int]]:
    cfg, chunk, n = args
    rng = np.random.default_rng([cfg.seed, chunk])
    return [(to_bucket(s, cfg), s.label) for s in (sample(rng) for _ in range(n))]


def make_dataset(cfg: TrainConfig) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Generate the training images in parallel, grouped by bucket shape."""
    chunk = 500
    jobs = [(cfg, i, min(chunk, cfg.train_samples - i * chunk)) for i in range(math.ceil(cfg.train_samples / chunk))]
    groups: dict[tuple[int, int], list[tuple[np.ndarray, int]]] = {}
    with Pool(cfg.threads) as pool:
        for items in tqdm(pool.imap(_make_chunk, jobs), total=len(jobs), desc="generate", unit="chunk"):
            for img, label in items:
                groups.setdefault(img.shape[:2], []).append((img, label))
    return {k: (np.stack([i for i, _ in v]), np.array([lab for _, lab in v])) for k, v in groups.items()}


def normalise(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC → float NCHW, ImageNet mean/std: the same transform the ONNX graph embeds."""
    x = batch_uint8.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def batches(data, cfg: TrainConfig, gen: torch.Generator):
    order = []
    for key, (_, labels) in data.items():
        idx = torch.randperm(len(labels), generator=gen)
        order += [(key, idx[i : i + cfg.batch_size]) for i in range(0, len(idx), cfg.batch_size)]
    for j in torch.randperm(len(order), generator=gen).tolist():
        key, idx = order[j]
        images, labels = data[key]
        yield torch.from_numpy(images[idx.numpy()]), torch.from_numpy(labels[idx.numpy()])


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: TrainConfig, seed: int) -> dict[str, float]:
    """Top-1 accuracy per shorter-side band on fresh samples (a seed never used in training)."""
    model.eval()
    rng = np.random.default_rng([seed, 999])
    report = {}
    for band in BANDS:
        correct = 0
        for i in range(cfg.eval_per_band):
            s = sample_in_band(rng, band, label=i % len(CLASSES))
            x = normalise(torch.from_numpy(to_bucket(s, cfg))[None])
            correct += int(model(x).argmax(1).item() == s.label)
        report[f"{band[0]}-{band[1]}"] = correct / cfg.eval_per_band
    report["overall"] = sum(report.values()) / len(BANDS)
    return report


def train(cfg: TrainConfig, out: Path) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.time()
    data = make_dataset(cfg)
    model = create("resnet10_shapes", num_classes=len(CLASSES)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * sum(math.ceil(len(v[1]) / cfg.batch_size) for v in data.values())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=steps, desc="train", unit="batch")
    for epoch in range(cfg.epochs):
        model.train()
        for images, labels in batches(data, cfg, gen):
            x = normalise(images)
            if torch.rand(1, generator=gen).item() < 0.5:  # scale jitter: 0.7–1.0 of the bucket
                f = 0.7 + 0.3 * torch.rand(1, generator=gen).item()
                x = F.interpolate(x, scale_factor=f, mode="bilinear", antialias=True)
            if torch.rand(1, generator=gen).item() < 0.5:
                x = x.flip(3)
            loss = F.cross_entropy(
                model(x.contiguous(memory_format=torch.channels_last)), labels, label_smoothing=cfg.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    accuracy = evaluate(model, cfg, seed=cfg.seed + 10_000)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out / "weights.safetensors")
    (out / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    record = {
        "model": "resnet10_shapes",
        "command": "python -m models.train_shapes",
        "config": asdict(cfg),
        "data": "models/shapes.py: fresh procedural images, "
        f"{cfg.train_samples} per epoch pool, classes {list(CLASSES)}",
        "eval": f"{cfg.eval_per_band} images per shorter-side band, seed {cfg.seed + 10_000}",
        "accuracy": accuracy,
        "train_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = vars(parser.parse_args())
    out = args.pop("out")
    record = train(TrainConfig(**args), out)
    print(json.dumps(record["accuracy"], indent=2))


if __name__ == "__main__":
    main()
