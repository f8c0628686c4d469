"""How a model's embeddings looked on its reference data (``reference.npz`` beside model.json), and the
out-of-distribution score judged against it: the export fits and thresholds it, the service scores with it.

The score is the negative log-likelihood of the embedding's square root (ReLU-pooled features are skewed;
the root evens their spread) under the nearest of a few Gaussians, one per frequent predicted class, in nats
per embedding dimension, less the reference's median: 0 is a typical reference image. Drift is the mean score of
recent answers, each capped at the threshold: flagged images are the out-of-distribution rate's; drift watches the
bulk move.
"""

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

QUANTILE = 0.995  # of the held-out reference scores: the threshold flags ~0.5 % of in-distribution images


class Reference(BaseModel):
    """The record in model.json: where the statistics came from, for which file, and the thresholds chosen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field("reference.npz", description="the arrays, beside model.onnx")
    source: str = Field(description="the images they were computed from")
    images: int = Field(description="images the Gaussians were fitted on")
    held_out: int = Field(description="further images the thresholds were chosen on")
    model_sha256: str = Field(description="the model.onnx whose embeddings these are")
    transform: Literal["sqrt"] = "sqrt"
    components: int = Field(ge=1, description="Gaussians: one per frequent predicted class, else one for all")
    rank: int = Field(ge=1, description="eigen-directions kept per Gaussian; the rest share one variance")
    shrinkage: float
    offset: float = Field(description="the held-out images' median raw score, subtracted so that 0 is typical")
    threshold: float = Field(description=f"the held-out scores' {QUANTILE:.1%} quantile: above it, flagged")
    drift_window: int = Field(ge=1, description="answers in the drift gauge's sliding window")
    drift_threshold: float = Field(
        description="the mean score over a window, each capped at the threshold, that held-out windows stay under"
    )
    label_frequencies: list[float] = Field(description="each class's share of the reference's predictions")
    top1_quantiles: dict[str, float] = Field(description="the reference's top-1 probability at p5 … p95")


class OodScore:
    """Scores embeddings [N, C] against the Gaussians of ``reference.npz``: one matrix product over every
    Gaussian's whitened directions (16 × 128 × 2048 floats for a ResNet-50 is a 16 MB read per call), and a small one
    with the means."""

    def __init__(self, means: np.ndarray, basis: np.ndarray, variances: np.ndarray, residual: np.ndarray) -> None:
        self.means, self.basis = means.astype(np.float32), basis.astype(np.float32)  # [G, C], [G, R, C]
        self.variances, self.residual = variances.astype(np.float64), residual.astype(np.float64)  # [G, R], [G]
        groups, rank, dim = basis.shape
        white = self.basis / np.sqrt(self.variances)[..., None].astype(np.float32)
        # ||W (z - m)||² for every Gaussian at once: z @ Wᵀ - W m, with W the whitened directions of all of them
        self.white, self.white_means = white.reshape(groups * rank, dim), np.einsum("grc,gc->gr", white, self.means)
        self.full = rank == dim  # else the directions not kept share one variance: ||z - m||² - ||V (z - m)||²
        self.scale = np.sqrt(self.variances).astype(np.float32)  # V (z - m) = √variances · W (z - m): no 2nd product
        self.logdet = np.log(self.variances).sum(1) + (dim - rank) * np.log(self.residual)
        self.offset = 0.0

    @classmethod
    def load(cls, folder: Path, record: Reference) -> "OodScore":
        with np.load(Path(folder) / record.file) as npz:
            score = cls(npz["means"], npz["basis"], npz["variances"], npz["residual"])
        score.offset = record.offset
        return score

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``reference.npz`` holds."""
        return {"means": self.means, "basis": self.basis, "variances": self.variances, "residual": self.residual}

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        z = np.sqrt(np.maximum(embeddings, 0, dtype=np.float32))  # [N, C]
        groups, rank, dim = self.basis.shape
        white = (z @ self.white.T).reshape(len(z), groups, rank) - self.white_means  # [N, G, R]
        nll = (white * white).sum(-1, dtype=np.float64) + self.logdet  # [N, G]
        if not self.full:
            kept = white * self.scale
            d2 = (z * z).sum(1)[:, None] - 2 * z @ self.means.T + (self.means * self.means).sum(1)
            nll += np.maximum(d2 - (kept * kept).sum(-1), 0) / self.residual
        return nll.min(1) / dim - self.offset
