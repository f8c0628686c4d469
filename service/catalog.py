"""Model-store entries as the service sees them: the ONNX path, its metadata and the linear head."""

import json
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np


@dataclass(frozen=True)
class Entry:
    tag: str
    path: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.meta["name"]

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path / self.meta["head"]) as npz:
            return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32)


def load(tag: str) -> Entry:
    """Resolve a store tag (``name:version`` or ``name:latest``) to its files; never guesses."""
    model = bentoml.models.get(tag)
    path = Path(model.path)
    meta = json.loads((path / "model.json").read_text())
    return Entry(str(model.tag), path, meta)
