"""The embedded default model: accurate at every size, in torch and in the shipped ONNX files."""

import io
import json

import numpy as np
import pytest
import torch

import models
from contract import cpu_isa
from export.pipeline import ExportSpec, run
from export.runtimes import hints
from models.shapes import BANDS, CLASSES, sample, sample_in_band
from models.train_shapes import TrainConfig, normalise, to_bucket, train
from service import catalog
from service.catalog import Entry
from service.classifier.heatmap import cam as class_map
from service.classifier.heatmap import normalise as normalise_cam
from service.classifier.heatmap import peak
from service.engine.interface import OUTPUTS, Item
from service.engine.runner import Runner
from service.engine.sessions import Sessions
from service.imaging.preprocess import ImageLimits, prepare
from tests.conftest import ROOT

FOLDER = ROOT / "default_model"
PER_BAND = 150
TEST_SEED = 31337  # never used in training (training: seed 0 and 0 + 10000)


def entry(name: str) -> Entry:
    path = FOLDER / name
    return catalog.read(name, path)


@pytest.fixture(scope="module")
def test_set() -> list:
    rng = np.random.default_rng(TEST_SEED)
    return [(band, sample_in_band(rng, band, label=i % len(CLASSES))) for band in BANDS for i in range(PER_BAND)]


@pytest.fixture(scope="module")
def onnx_models() -> dict[str, Sessions]:
    return {
        n: Sessions(entry(n), ("CPUExecutionProvider",), 2, False) for n in ("shapes-resnet10", "shapes-resnet10-int8")
    }


def bmp(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="BMP")
    return buf.getvalue()


def accuracy_by_band(predicted: list[int], test_set) -> dict:
    hits: dict = {}
    for (band, s), p in zip(test_set, predicted, strict=True):
        hits.setdefault(band, []).append(p == s.label)
    report = {band: float(np.mean(h)) for band, h in hits.items()}
    report["overall"] = float(np.mean([p == s.label for (_, s), p in zip(test_set, predicted, strict=True)]))
    return report


def check(report: dict) -> None:
    assert report["overall"] >= 0.98, report
    for band in BANDS:
        assert report[band] >= 0.95, (band, report)


def test_weights_are_small_and_recorded() -> None:
    assert (FOLDER / "weights.safetensors").stat().st_size < 5e6
    record = json.loads((FOLDER / "training.json").read_text())
    assert record["accuracy"]["overall"] >= 0.98 and record["command"].startswith("python -m models.train_shapes")
    meta = entry("shapes-resnet10").meta
    assert meta.trained is True and meta.training["accuracy"] == record["accuracy"]
    assert meta.labels == list(CLASSES)


@torch.no_grad()
def test_torch_accuracy_in_every_size_band(test_set) -> None:
    model = models.create("resnet10_shapes", num_classes=len(CLASSES)).eval()
    models.load_checkpoint(model, FOLDER / "weights.safetensors")
    cfg = TrainConfig()
    predicted = [int(model(normalise(torch.from_numpy(to_bucket(s, cfg))[None])).argmax()) for _, s in test_set]
    check(accuracy_by_band(predicted, test_set))


def test_onnx_accuracy_int8_agreement_and_cam(test_set, onnx_models) -> None:
    pre = onnx_models["shapes-resnet10"].meta.preprocessing
    limits = ImageLimits(max_pixels=40_000_000, max_aspect=20, min_side=16)
    prepared = [prepare(bmp(s.image), "full", pre, limits) for _, s in test_set]
    runner = Runner(onnx_models)
    fp32 = runner([Item("shapes-resnet10", p.pixels, ("logits", "features")) for p in prepared])
    int8 = runner([Item("shapes-resnet10-int8", p.pixels) for p in prepared])
    head = onnx_models["shapes-resnet10"].entry.head()[0]
    top_fp32 = [int(r.outputs["logits"].argmax()) for r in fp32]
    top_int8 = [int(r.outputs["logits"].argmax()) for r in int8]
    check(accuracy_by_band(top_fp32, test_set))
    assert np.mean(np.equal(top_fp32, top_int8)) >= 0.99, "int8 agrees with fp32 on ≥ 99 % of images"
    hits = []
    for (_, s), p, r in zip(test_set, prepared, fp32, strict=True):
        out = r.outputs
        cam = normalise_cam(class_map(head[int(out["logits"].argmax())], out["features"]))
        x, y = peak(cam)
        px, py = p.to_original(x * p.pixels.shape[1] / cam.shape[1], y * p.pixels.shape[0] / cam.shape[0])
        hits.append(s.box[0] <= px < s.box[2] and s.box[1] <= py < s.box[3])
    assert np.mean(hits) >= 0.9, f"CAM peak inside the box on {np.mean(hits):.1%} of images"


@pytest.mark.slow
def test_shipped_onnx_equals_a_fresh_export(tmp_path, onnx_models) -> None:
    meta = onnx_models["shapes-resnet10"].meta
    spec = ExportSpec(
        variant="resnet10_shapes",
        weights=FOLDER / "weights.safetensors",
        num_classes=6,
        name="shapes-resnet10",
        parity_shapes=[(1, 112, 112), (2, 112, 224)],
        output=tmp_path,
        to_store=False,
        reference_images=0,  # tests/test_reference.py
    )
    (folder,) = run(spec)
    recorded = catalog.read("fresh", folder).meta.runtimes
    assert [r.name for r in recorded] == hints() and all(r.isa == cpu_isa() for r in recorded), "OpenVINO timed here"
    fresh = Sessions(
        catalog.read("fresh", folder),
        ("CPUExecutionProvider",),
        2,
        False,
    )
    rng = np.random.default_rng(1)
    for size in [(112, 112), (112, 336), (224, 112)]:
        x = np.stack([np.asarray(sample(rng, size=size[::-1]).image) for _ in range(3)])
        a = onnx_models["shapes-resnet10"].run(x, list(OUTPUTS))
        b = fresh.run(x, list(OUTPUTS))
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5)
    assert meta.preprocessing.policy == "full" and meta.parity["worst"]["top1"] == 1.0


def test_training_runs_end_to_end_on_a_tiny_budget(tmp_path) -> None:
    cfg = TrainConfig(train_samples=96, epochs=1, batch_size=16, eval_per_band=3)
    record = train(cfg, tmp_path)
    assert (tmp_path / "weights.safetensors").is_file() and set(record["accuracy"]) >= {"overall", "48-96"}
    model = models.load_checkpoint(models.create("resnet10_shapes", num_classes=6), tmp_path / "weights.safetensors")
    assert model.fc.out_features == 6


def test_int8_agrees_with_fp32_at_every_shape_the_service_makes(onnx_models) -> None:
    """Every `full` bucket, the crop square and odd sizes a tensor client may send. (Beyond ~400 px this
    112-px model is unsure even in fp32; int8 at ≥ 512 px is checked on ResNet-50 by `make bench`.)"""
    meta, rng = onnx_models["shapes-resnet10"].meta, np.random.default_rng(77)
    same = []
    for h, w in [*meta.preprocessing.buckets(), (113, 171), (97, 301), (129, 257)]:
        x = np.stack([np.asarray(sample(rng, size=(w, h)).image) for _ in range(4)])
        a = onnx_models["shapes-resnet10"].run(x, ["logits"])["logits"]
        b = onnx_models["shapes-resnet10-int8"].run(x, ["logits"])["logits"]
        same += list(a.argmax(1) == b.argmax(1))
    assert np.mean(same) >= 0.99, f"int8 top-1 agrees with fp32 on {np.mean(same):.1%} of {len(same)} images"
    assert all(r["top1"] == 1.0 for r in onnx_models["shapes-resnet10-int8"].meta.parity["shapes"])
