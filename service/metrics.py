"""Prometheus metrics beside BentoML's own, served on /metrics.

BentoML keeps every server's multiprocess files in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties it when a
server starts, so a second ``bentoml serve`` under the same home would remove the first one's counters. Each
deployment gets a folder of its own instead (``RESNET_METRICS_DIR``, made by the service's ``on_deployment`` hook),
taken here, before any value is created, by every worker of that deployment.
"""

import os
import time

import bentoml
import prometheus_client
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

if folder := os.environ.get("RESNET_METRICS_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
GONE_S = 60.0  # the series of an engine or a model version gone this long leave /metrics (``left_out``)

BATCH_SIZE = bentoml.metrics.Histogram(
    name="resnet_batch_size",
    documentation="Images per onnxruntime call",
    labelnames=["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="resnet_inference_seconds",
    documentation="onnxruntime time per call",
    labelnames=["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PREPROCESS_SECONDS = bentoml.metrics.Histogram(
    name="resnet_preprocess_seconds",
    documentation="Decode and resize time per image",
    labelnames=["policy"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
REQUESTS = bentoml.metrics.Counter(
    name="resnet_images",
    documentation="Images accepted, per model, policy and shape bucket (height x width)",
    labelnames=["model", "policy", "bucket"],
)

# What each model version is doing (classifier/telemetry.py): over every answer, a shadow's included.
ANSWERS = bentoml.metrics.Counter(
    name="resnet_answers",
    documentation="Answers per predicted (top-1) label",
    labelnames=["model", "version", "label"],
)
TOP1 = bentoml.metrics.Histogram(
    name="resnet_top1_probability",
    documentation="The top-1 probability of each answer",
    labelnames=["model", "version"],
    buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="resnet_answer_model_seconds",
    documentation="The model call time behind each answer",
    labelnames=["model", "version"],
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
)
OOD = bentoml.metrics.Counter(
    name="resnet_ood",
    documentation="Answers whose out-of-distribution score is above the model's threshold",
    labelnames=["model", "version"],
)
DRIFT = bentoml.metrics.Gauge(
    name="resnet_drift",
    documentation="Mean out-of-distribution score of a worker's last answers (0 until they fill its window): the worst",
    labelnames=["model", "version"],
    multiprocess_mode="livemax",
)
DRIFT_THRESHOLD = bentoml.metrics.Gauge(
    name="resnet_drift_threshold",
    documentation="The drift that windows of the model's reference data stay under 99.9 % of the time",
    labelnames=["model", "version"],
    multiprocess_mode="livemax",
)
REFERENCE_LABELS = bentoml.metrics.Gauge(
    name="resnet_reference_label_fraction",
    documentation="Each label's share of the answers on the model's reference data",
    labelnames=["model", "version", "label"],
    multiprocess_mode="livemax",
)

# A rollout (service/rollout.py): each shadow version against the default version it copies, on the same requests.
SHADOW_COMPARED = bentoml.metrics.Counter(
    name="resnet_shadow_compared",
    documentation="Images a shadow version answered beside the default",
    labelnames=["model", "version", "default"],
)
SHADOW_AGREED = bentoml.metrics.Counter(
    name="resnet_shadow_agreed",
    documentation="Compared images whose top-1 label the shadow and the default agree on",
    labelnames=["model", "version", "default"],
)
SHADOW_TOP1_DIFFERENCE = bentoml.metrics.Counter(
    name="resnet_shadow_top1_difference",
    documentation="The sum of the absolute differences of the two top-1 probabilities, over compared images",
    labelnames=["model", "version", "default"],
)
SHADOW_OOD = bentoml.metrics.Counter(
    name="resnet_shadow_ood",
    documentation="Compared images that each side (shadow or default) flags out of distribution",
    labelnames=["model", "version", "default", "side"],
)
SHADOW_DROPPED = bentoml.metrics.Counter(
    name="resnet_shadow_dropped",
    documentation="Images whose shadow copy was dropped to keep the engine for live work",
    labelnames=["model", "version", "default"],
)
MIN_AGREEMENT = bentoml.metrics.Gauge(
    name="resnet_shadow_min_agreement",
    documentation="The agreement below which a shadow's comparison alerts (RESNET_MIN_AGREEMENT)",
    multiprocess_mode="livemax",
)

# The engine's queue (engine/batcher.py), summed over the processes that run models.
QUEUED = bentoml.metrics.Gauge(
    name="resnet_engine_queued_images",
    documentation="Images waiting for a model call",
    multiprocess_mode="livesum",
)
IN_FLIGHT = bentoml.metrics.Gauge(
    name="resnet_engine_batches_in_flight",
    documentation="Model calls running",
    multiprocess_mode="livesum",
)

# A front's engines (engine/member.py), each labelled host:port (or its socket), as this front's workers see them.
ENGINE_CALLS = bentoml.metrics.Counter(
    name="resnet_engine_calls",
    documentation="Calls sent to each engine",
    labelnames=["engine"],
)
ENGINE_FAILURES = bentoml.metrics.Counter(
    name="resnet_engine_failures",
    documentation="Calls to each engine that failed before it answered, or that it refused as busy",
    labelnames=["engine"],
)
ENGINE_EJECTIONS = bentoml.metrics.Counter(
    name="resnet_engine_ejections",
    documentation="Times each engine was judged down (refused, silent for two heartbeats, or its connection lost)",
    labelnames=["engine"],
)
ENGINE_UP = bentoml.metrics.Gauge(
    name="resnet_engine_up",
    documentation="1 while the heartbeat judges the engine up (the lowest over this front's workers)",
    labelnames=["engine"],
    multiprocess_mode="livemin",
)


def collected() -> dict[str, list[Sample]]:
    """This deployment's samples by metric, summed over its worker processes as /metrics shows them."""
    registry = prometheus_client.REGISTRY
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        MultiProcessCollector(registry, folder)
    return {family.name: family.samples for family in registry.collect()}


def left_out(text: str, gone: dict[tuple[str, ...], float]) -> str:
    """/metrics without the series of what has been gone for more than GONE_S: each key of ``gone`` holds the label
    pairs (``name="value"``) that such a series has, its value when it went. prometheus_client's multiprocess mode
    cannot remove a series, so churn (engine pods, retrained versions) would otherwise grow /metrics for ever."""
    now = time.monotonic()
    marks = [labels for labels, left in gone.items() if now - left > GONE_S]
    if not marks:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not any(all(m in line for m in labels) for labels in marks))
