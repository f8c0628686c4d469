"""What each model is doing, per answer: its label and confidence, how unlike its reference data the image is
(contract/reference.py), and the drift of recent answers, for /metrics and for the answer itself."""

from collections import deque

import numpy as np

from contract import OodScore

from ..catalog import Entry
from ..metrics import ANSWERS, DRIFT, DRIFT_THRESHOLD, MODEL_SECONDS, OOD, REFERENCE_LABELS, TOP1
from .schemas import OutOfDistribution

NOT_SCORED = (
    "exported without reference statistics: answers carry no out-of-distribution verdict (ood: null); add them "
    "with python -m export.reference FOLDER --images DIR (images like those it serves), then load the new version"
)


def ood_status(entry: Entry) -> dict:
    """Whether a model's answers carry the out-of-distribution verdict, and why not (GET /models)."""
    reference = entry.meta.reference
    if reference is None:
        return {"scored": False, "reason": NOT_SCORED}
    return {"scored": True, "reference": reference.source, "gaussians": reference.components}


class Monitor:
    """One model version's telemetry in this worker; the drift window is this worker's own recent answers."""

    def __init__(self, entry: Entry) -> None:
        name, version, self.reference = entry.name, entry.version, entry.meta.reference
        self.answers = [ANSWERS.labels(model=name, version=version, label=label) for label in entry.meta.labels]
        self.top1, self.ood = TOP1.labels(model=name, version=version), OOD.labels(model=name, version=version)
        self.model_seconds = MODEL_SECONDS.labels(model=name, version=version)
        self.score = None if self.reference is None else OodScore.load(entry.path, self.reference)
        if self.reference is not None:
            self.window: deque[float] = deque(maxlen=self.reference.drift_window)
            self.window_sum = 0.0
            self.drift = DRIFT.labels(model=name, version=version)
            DRIFT_THRESHOLD.labels(model=name, version=version).set(self.reference.drift_threshold)
            for label, share in zip(entry.meta.labels, self.reference.label_frequencies, strict=True):
                REFERENCE_LABELS.labels(model=name, version=version, label=label).set(share)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph outputs it needs beside the logits."""
        return () if self.score is None else ("embedding",)

    def observe(
        self, probabilities: np.ndarray, embeddings: np.ndarray | None, model_ms: list[float]
    ) -> list[OutOfDistribution | None]:
        """Count a request's answers ([N, K] probabilities, [N, C] embeddings, and the time of each one's model
        call); each one's verdict."""
        best = probabilities.argmax(1)
        for label, p, ms in zip(best, probabilities[np.arange(len(best)), best], model_ms, strict=True):
            self.answers[label].inc()
            self.top1.observe(float(p))
            self.model_seconds.observe(ms / 1e3)
        if self.score is None or embeddings is None:
            return [None] * len(best)
        scores, threshold = self.score(embeddings), self.reference.threshold
        flagged = scores > threshold
        if flagged.any():
            self.ood.inc(int(flagged.sum()))
        for s in np.minimum(scores, threshold).tolist():
            if len(self.window) == self.window.maxlen:
                self.window_sum -= self.window[0]
            self.window.append(s)
            self.window_sum += s
        if len(self.window) == self.window.maxlen:
            self.drift.set(self.window_sum / len(self.window))
        return [
            OutOfDistribution(score=float(s), threshold=threshold, flagged=bool(f))
            for s, f in zip(scores, flagged, strict=True)
        ]
