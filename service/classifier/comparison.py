"""A rollout's live figures: each version's own (answers, out-of-distribution rate, p50 model time), and each shadow
against the default on the same requests (top-1 label agreement, the top-1 probability's mean absolute difference,
each side's out-of-distribution rate). Counted per worker for /metrics, and summed over the workers for GET /models."""

import numpy as np
from prometheus_client.samples import Sample

from ..metrics import SHADOW_AGREED, SHADOW_COMPARED, SHADOW_DROPPED, SHADOW_OOD, SHADOW_TOP1_DIFFERENCE
from .schemas import OutOfDistribution

SIDES = ("shadow", "default")


class Comparison:
    """One shadow version of ``name`` against one default version, in this worker."""

    def __init__(self, name: str, version: str, default: str) -> None:
        labels = {"model": name, "version": version, "default": default}
        self.compared, self.agreed = SHADOW_COMPARED.labels(**labels), SHADOW_AGREED.labels(**labels)
        self.difference, self.dropped = SHADOW_TOP1_DIFFERENCE.labels(**labels), SHADOW_DROPPED.labels(**labels)
        self.ood = {side: SHADOW_OOD.labels(**labels, side=side) for side in SIDES}

    def observe(
        self,
        labels: tuple[list[str], list[str]],
        top1: tuple[np.ndarray, np.ndarray],
        verdicts: tuple[list[OutOfDistribution | None], list[OutOfDistribution | None]],
    ) -> None:
        """Count the images both sides answered: (shadow, default) top-1 labels, probabilities and verdicts."""
        self.compared.inc(len(labels[0]))
        self.agreed.inc(sum(a == b for a, b in zip(*labels, strict=True)))
        self.difference.inc(float(np.abs(top1[0] - top1[1]).sum()))
        for side, found in zip(SIDES, verdicts, strict=True):
            self.ood[side].inc(sum(v is not None and v.flagged for v in found))


def _sum(samples: list[Sample], suffix: str = "_total", **labels: str) -> float:
    return sum(s.value for s in samples if s.name.endswith(suffix) and labels.items() <= s.labels.items())


def _p50_ms(samples: list[Sample], **labels: str) -> float | None:
    """The median of a histogram, interpolated in its bucket as Prometheus's histogram_quantile does."""
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in samples
        if s.name.endswith("_bucket") and labels.items() <= s.labels.items()
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    rank, (low, below) = buckets[-1][1] / 2, (0.0, 0.0)
    for high, count in buckets:
        if count >= rank:
            if high == float("inf"):
                return low * 1e3
            return (low + (high - low) * (rank - below) / max(count - below, 1e-9)) * 1e3
        low, below = high, count
    return None


def figures(found: dict[str, list[Sample]], name: str, default: str, versions: dict[str, str]) -> dict[str, dict]:
    """Each version's live figures, and each shadow's comparison with ``default`` (``versions``: version → its
    role, shadow or other), from ``found``: metrics.collected(), every worker's counts."""
    answers, ood, seconds = (found.get(m, []) for m in ("resnet_answers", "resnet_ood", "resnet_answer_model_seconds"))
    p50 = {v: _p50_ms(seconds, model=name, version=v) for v in {*versions, default}}
    out: dict[str, dict] = {}
    for version, role in versions.items():
        mine = {"model": name, "version": version}
        count = _sum(answers, **mine)
        out[version] = {
            "live": {
                "answers": int(count),
                "ood_rate": _sum(ood, **mine) / count if count else None,
                "p50_model_ms": p50[version],
            }
        }
        if role == "shadow":
            sides = {"shadow": p50[version], "default": p50[default]}
            out[version]["comparison"] = _compare(found, mine | {"default": default}, sides)
    return out


def _compare(found: dict[str, list[Sample]], pair: dict[str, str], p50_ms: dict[str, float | None]) -> dict:
    """One shadow's comparison (``pair``: model, version and the default it copies); ``p50_ms``: each side's."""
    n = _sum(found.get("resnet_shadow_compared", []), **pair)

    def per_image(metric: str, **labels: str) -> float | None:
        return _sum(found.get(metric, []), **pair, **labels) / n if n else None

    return {
        "against": pair["default"],
        "compared": int(n),
        "dropped": int(_sum(found.get("resnet_shadow_dropped", []), **pair)),
        "top1_agreement": per_image("resnet_shadow_agreed"),
        "top1_probability_mean_abs_difference": per_image("resnet_shadow_top1_difference"),
        "ood_rate": {side: per_image("resnet_shadow_ood", side=side) for side in SIDES},
        "p50_model_ms": p50_ms,
    }
