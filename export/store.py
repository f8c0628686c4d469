"""Write exported folders (model.onnx, model.json, head.npz and reference.npz if any) into the BentoML model store.

Torch-free, so ``make serve`` can import the committed default model with serving packages only:

    python -m export.store default_model/shapes-resnet10 [more folders...]
"""

import hashlib
import shutil
import sys
from pathlib import Path

import bentoml

import contract

FILES = ("model.onnx", "model.json", "head.npz")


def files(folder: Path) -> list[str]:
    """What an export folder holds: the reference statistics too, when the export computed them."""
    meta = contract.read(folder)
    return [*FILES, *([meta.reference.file] if meta.reference else [])]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(folder: Path) -> str:
    """One hash over the folder's files: a changed model.json (new metadata, same graph) is a new entry."""
    h = hashlib.sha256()
    for file in files(folder):
        h.update(file.encode() + b"\0" + sha256(folder / file).encode())
    return h.hexdigest()


def find(name: str, files_digest: str) -> bentoml.Model | None:
    """An existing store entry of ``name`` holding exactly these files."""
    try:
        candidates = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return None
    return next((m for m in candidates if m.info.labels.get("files_sha256") == files_digest), None)


def save(folder: Path) -> bentoml.Model:
    """Store ``folder`` under the name in its model.json, unless the same files are there already."""
    meta = contract.read(folder)
    files_digest = digest(folder)
    existing = find(meta.name, files_digest)
    if existing is not None:
        return existing
    labels = {
        "architecture": meta.architecture,
        "precision": meta.precision,
        "trained": str(meta.trained).lower(),
        "onnx_sha256": sha256(folder / "model.onnx"),
        "files_sha256": files_digest,
    }
    summary = {
        "num_classes": meta.num_classes,
        "opset": meta.opset,
        "parameters": meta.parameters,
        "embedding_dim": meta.embedding_dim,
        "parity_worst": meta.parity["worst"],
    }
    with bentoml.models.create(meta.name, labels=labels, metadata=summary) as model:
        for file in files(folder):
            shutil.copy2(folder / file, Path(model.path) / file)
    return model


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m export.store FOLDER [FOLDER...]")
    for folder in argv:
        print(f"model store: {save(Path(folder)).tag}")


if __name__ == "__main__":
    main(sys.argv[1:])
