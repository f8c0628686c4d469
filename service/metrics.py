"""Prometheus metrics beside BentoML's own, served on /metrics."""

import bentoml

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
