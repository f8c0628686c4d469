"""Model-store entries as the service sees them: the ONNX path, its metadata and the linear head."""

from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np
from pydantic import ValidationError

import contract
from contract import ModelMetadata


@dataclass(frozen=True)
class Entry:
    tag: str
    path: Path
    meta: ModelMetadata

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.tag.partition(":")[2]

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path / self.meta.head) as npz:
            return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32)


def read(tag: str, path: Path) -> Entry:
    """An export folder's entry; metadata that breaks the contract stops the service with the field at fault."""
    try:
        return Entry(tag, path, contract.read(path))
    except ValidationError as exc:
        raise RuntimeError(f"model {tag}: {path / 'model.json'} does not match the model contract: {exc}") from None


def load(tag: str) -> Entry:
    """Resolve a store tag (``name:version`` or ``name:latest``) to its files; never guesses."""
    model = bentoml.models.get(tag)
    return read(str(model.tag), Path(model.path))
