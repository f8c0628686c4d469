"""The model contract: one typed model.json for export and service, its schema file, its bucket rule."""

import json

import pytest
from pydantic import ValidationError

import contract
from contract import Full, ModelMetadata
from contract.__main__ import SCHEMA
from service import catalog
from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "default_model").glob("*/model.json"))


def test_schema_file_is_generated_from_the_classes() -> None:
    assert json.loads(SCHEMA.read_text()) == ModelMetadata.model_json_schema(), "run `python -m contract`"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_metadata_round_trips(path) -> None:
    meta = contract.read(path.parent)
    assert json.loads(meta.model_dump_json()) == {**json.loads(path.read_text()), **json.loads(meta.model_dump_json())}
    assert ModelMetadata.model_validate_json(meta.model_dump_json()) == meta


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.update(labels=m["labels"][:-1]), "labels"),
        (lambda m: m["preprocessing"].update(policy="stretch"), "policy"),
        (lambda m: m.update(precision="int4"), "precision"),
        (lambda m: m["preprocessing"]["full"].pop("short_side"), "short_side"),
        (lambda m: m.update(colour_space="bgr"), "colour_space"),
    ],
)
def test_a_broken_model_json_is_refused_with_the_field_at_fault(tmp_path, change, field: str) -> None:
    meta = json.loads(SHIPPED[0].read_text())
    change(meta)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValidationError, match=field):
        contract.read(tmp_path)
    with pytest.raises(RuntimeError, match="does not match the model contract"):
        catalog.read("broken", tmp_path)


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((112, 112), (112, 112)),
        ((224, 112), (240, 112)),
        ((112, 600), (112, 336)),
        ((300, 200), (176, 112)),
        ((201, 100), (240, 112)),
        ((100, 141), (112, 144)),
    ],
)
def test_full_bucket_rule(size, bucket) -> None:
    full = Full(short_side=112, max_long_side=336)
    assert full.target(*size) == bucket
    assert bucket[::-1] in {(112, n) for n in full.longs()} | {(n, 112) for n in full.longs()}
