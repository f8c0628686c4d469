"""Write exported folders (model.onnx + model.json + head.npz) into the BentoML model store.

Torch-free, so ``make serve`` can import the committed default model with serving packages only:

    python -m export.store default_model/shapes-resnet10 [more folders...]
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import bentoml

FILES = ("model.onnx", "model.json", "head.npz")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find(name: str, digest: str) -> bentoml.Model | None:
    """An existing store entry of ``name`` holding exactly this ONNX file."""
    try:
        candidates = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return None
    return next((m for m in candidates if m.info.labels.get("onnx_sha256") == digest), None)


def save(folder: Path) -> bentoml.Model:
    """Store ``folder`` under the name in its model.json, unless the same ONNX is there already."""
    meta = json.loads((folder / "model.json").read_text())
    digest = sha256(folder / "model.onnx")
    existing = find(meta["name"], digest)
    if existing is not None:
        return existing
    labels = {
        "architecture": meta["architecture"],
        "precision": meta["precision"],
        "trained": str(meta["trained"]).lower(),
        "onnx_sha256": digest,
    }
    summary = {k: meta[k] for k in ("num_classes", "opset", "parameters", "embedding_dim")}
    summary["parity_worst"] = meta["parity"]["worst"]
    with bentoml.models.create(meta["name"], labels=labels, metadata=summary) as model:
        for file in FILES:
            shutil.copy2(folder / file, Path(model.path) / file)
    return model


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m export.store FOLDER [FOLDER...]")
    for folder in argv:
        print(f"model store: {save(Path(folder)).tag}")


if __name__ == "__main__":
    main(sys.argv[1:])
