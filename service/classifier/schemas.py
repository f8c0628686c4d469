"""Pydantic response models: what every route answers, as documented in /docs.json."""

from typing import Any

from pydantic import BaseModel, Field


def _null_first(schema: dict) -> None:
    """Optional fields list null first: BentoML's schema keeps a union's first type, and its clients decode
    an answer by that schema (an array type would make them iterate over a null)."""
    schema["anyOf"].sort(key=lambda alternative: alternative.get("type") != "null")


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class Timing(BaseModel):
    preprocess_ms: float = Field(description="decode, orientation, colour mode and resize")
    inference_ms: float = Field(description="queue + batching + onnxruntime, as seen by the front")
    model_ms: float = Field(description="the onnxruntime call this image was part of")
    batch_size: int = Field(description="images in that onnxruntime call")


class OutOfDistribution(BaseModel):
    score: float = Field(
        description="how unlike the model's reference data the image is, in nats per embedding dimension; 0 is typical"
    )
    threshold: float = Field(description="the score 0.5 % of held-out reference images exceed, chosen at export")
    flagged: bool = Field(description="score > threshold: the model was not trained on images like this one")


def _ood() -> Any:  # a Field
    return Field(None, description="null for a model exported without reference data", json_schema_extra=_null_first)


def _version() -> Any:  # a Field
    return Field(description="the model store version that answered (BentoML's tag is model:version)")


class Classification(BaseModel):
    model: str
    version: str = _version()
    policy: str
    predictions: list[Prediction]
    original_size: tuple[int, int] = Field(description="(width, height) after EXIF orientation")
    inferred_size: tuple[int, int] = Field(description="(width, height) the model saw")
    timing: Timing
    ood: OutOfDistribution | None = _ood()


class BatchClassification(BaseModel):
    results: list[Classification]


class Explanation(Classification):
    class_index: int
    class_label: str
    peak: tuple[int, int] = Field(description="(x, y) of the map's peak region, in original image pixels")
    heatmap_png: str = Field(description="base64 PNG: the map over the image the model saw")
    cam: list[list[float]] | None = Field(
        None, description="the map, min-max normalised to [0, 1]", json_schema_extra=_null_first
    )


class Embedding(BaseModel):
    model: str
    version: str = _version()
    dim: int
    normalized: bool
    embedding: list[float]
    timing: Timing
    ood: OutOfDistribution | None = _ood()
