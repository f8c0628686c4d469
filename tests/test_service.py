"""The served API through real HTTP: a `bentoml serve` process with the committed default model."""

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from models.shapes import CLASSES, sample, sample_in_band
from tests.conftest import IMAGES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def post(url: str, route: str, data: bytes | None = None, **fields) -> httpx.Response:
    files = {"image": ("image.png", data, "image/png")} if data is not None else None
    return httpx.post(f"{url}/{route}", files=files, data={k: str(v) for k, v in fields.items()}, timeout=60)


@pytest.mark.parametrize("policy", ["full", "crop"])
def test_classify_generated_shapes(url, policy) -> None:
    rng = np.random.default_rng(4242)
    correct = 0
    bands = [(48, 96), (96, 224), (224, 512), (512, 1024)] * 6
    if policy == "full":  # any aspect ratio: the whole image is seen
        cases = [sample_in_band(rng, band, label=i % 6) for i, band in enumerate(bands)]
    else:  # a centre crop of a 3:1 image may cut the shape away: near-square images only
        cases = [sample(rng, size=(int(rng.integers(*b)),) * 2, label=i % 6) for i, b in enumerate(bands)]
    for s in cases:
        r = post(url, "classify", png(s.image), policy=policy, top_k=3)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "shapes-resnet10" and body["policy"] == policy
        assert body["original_size"] == list(s.image.size)
        probs = [p["probability"] for p in body["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        correct += body["predictions"][0]["label"] == s.name
    assert correct / len(cases) >= 0.9


def test_classify_real_photo_and_timing(url) -> None:
    r = post(url, "classify", (IMAGES / "astronaut.png").read_bytes(), top_k=6)
    body = r.json()
    assert r.status_code == 200 and len(body["predictions"]) == 6
    assert abs(sum(p["probability"] for p in body["predictions"]) - 1) < 1e-6
    assert body["inferred_size"] == [112, 112] and body["original_size"] == [512, 512]
    t = body["timing"]
    assert t["preprocess_ms"] > 0 and t["inference_ms"] >= t["model_ms"] > 0 and t["batch_size"] >= 1


def test_batching_gives_the_answer_of_a_lone_request(url) -> None:
    rng = np.random.default_rng(77)
    images = [png(sample(rng).image) for _ in range(24)]
    alone = [post(url, "classify", img, top_k=6).json() for img in images]

    async def flood() -> list[dict]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(i: int) -> dict:
                files = {"image": ("x.png", images[i % len(images)], "image/png")}
                r = await client.post(f"{url}/classify", files=files, data={"top_k": "6"})
                assert r.status_code == 200, r.text
                return r.json()

            return await asyncio.gather(*(one(i) for i in range(240)))

    together = asyncio.run(flood())
    assert max(r["timing"]["batch_size"] for r in together) > 1, "concurrent requests were batched"
    for i, res in enumerate(together):
        ref = {p["index"]: p["probability"] for p in alone[i % len(images)]["predictions"]}
        got = {p["index"]: p["probability"] for p in res["predictions"]}
        assert ref.keys() == got.keys()
        assert max(abs(ref[k] - got[k]) for k in ref) < 1e-5


def test_classify_batch_equals_single_calls(url) -> None:
    rng = np.random.default_rng(5)
    images = [png(sample(rng).image) for _ in range(5)]
    files = [("images", (f"{i}.png", img, "image/png")) for i, img in enumerate(images)]
    r = httpx.post(f"{url}/classify_batch", files=files, data={"top_k": "2"}, timeout=60)
    assert r.status_code == 200, r.text
    batch = r.json()["results"]
    singles = [post(url, "classify", img, top_k=2).json() for img in images]
    assert len(batch) == 5
    for b, s in zip(batch, singles, strict=True):
        assert [p["index"] for p in b["predictions"]] == [p["index"] for p in s["predictions"]]
        assert abs(b["predictions"][0]["probability"] - s["predictions"][0]["probability"]) < 1e-5


def test_explain_peak_lies_on_the_shape(url) -> None:
    rng = np.random.default_rng(9)
    hits, n = 0, 12
    for i in range(n):
        s = sample(rng, size=(int(rng.integers(160, 600)), int(rng.integers(160, 600))), label=i % 6)
        r = post(url, "explain", png(s.image), include_map="true")
        assert r.status_code == 200, r.text
        body = r.json()
        x, y = body["peak"]
        hits += s.box[0] <= x < s.box[2] and s.box[1] <= y < s.box[3]
        heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
        assert heat.size == tuple(body["inferred_size"])
        cam = np.array(body["cam"])
        assert cam.min() == 0 and cam.max() == 1 and cam.shape == (heat.size[1] // 16, heat.size[0] // 16)
    assert hits / n >= 0.8


def test_explain_a_requested_class(url) -> None:
    s = sample(np.random.default_rng(3), size=(200, 200), label=0)
    body = post(url, "explain", png(s.image), class_index=4).json()
    assert body["class_index"] == 4 and body["class_label"] == CLASSES[4]


def test_embed(url) -> None:
    s = sample(np.random.default_rng(8), size=(256, 192))
    body = post(url, "embed", png(s.image)).json()
    meta = httpx.get(f"{url}/models").json()[0]
    assert body["dim"] == meta["embedding_dim"] == len(body["embedding"]) == 128
    assert abs(np.linalg.norm(body["embedding"]) - 1) < 1e-6
    raw = post(url, "embed", png(s.image), normalize="false").json()
    assert not raw["normalized"] and abs(np.linalg.norm(raw["embedding"]) - 1) > 1e-3


def test_models_listing_reports_metadata_and_provider(url) -> None:
    listing = httpx.get(f"{url}/models").json()
    assert [m["name"] for m in listing] == ["shapes-resnet10", "shapes-resnet10-int8"]
    for m in listing:
        assert m["provider"] == "CPUExecutionProvider", "CUDA requested, no GPU: CPU fallback reported"
        assert m["parity"]["worst"]["max_abs"] >= 0 and m["trained"] is True
    assert httpx.post(f"{url}/models", json={}).json() == listing


def test_int8_model_is_selectable(url) -> None:
    s = sample(np.random.default_rng(11), size=(300, 200), label=2)
    body = post(url, "classify", png(s.image), model="shapes-resnet10-int8").json()
    assert body["model"] == "shapes-resnet10-int8" and body["predictions"][0]["label"] == "triangle"


@pytest.mark.parametrize(
    ("fields", "data", "status", "error"),
    [
        ({"model": "resnet9000"}, None, 404, "unknown_model"),
        ({"policy": "stretch"}, None, 400, "bad_policy"),
        ({"top_k": 0}, None, 400, "bad_top_k"),
        ({}, b"definitely not an image", 415, "unsupported_image"),
    ],
)
def test_bad_requests_get_json_errors(url, fields, data, status, error) -> None:
    image = data if data is not None else png(Image.new("RGB", (64, 64), "white"))
    r = post(url, "classify", image, **fields)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error and body["detail"] and "Traceback" not in r.text
    assert post(url, "classify", png(Image.new("RGB", (64, 64)))).status_code == 200


def test_health_and_metrics(url) -> None:
    assert httpx.get(f"{url}/livez").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 200
    version = post(url, "classify", png(Image.new("RGB", (100, 300), "gray"))).json()["version"]
    metrics = httpx.get(f"{url}/metrics").text
    labels = f'model="shapes-resnet10",version="{version}"'  # every version's telemetry of its own
    for name in (
        "resnet_batch_size",
        "resnet_inference_seconds",
        "resnet_preprocess_seconds",
        "resnet_images",
        f'resnet_answers_total{{label="square",{labels}}}',
        f"resnet_top1_probability_count{{{labels}}}",
        f"resnet_ood_total{{{labels}}}",
        f"resnet_drift_threshold{{{labels}}}",
        f"resnet_answer_model_seconds_count{{{labels}}}",
        "resnet_engine_queued_images",
        "resnet_engine_batches_in_flight",
    ):
        assert name in metrics
    schema = json.dumps(httpx.get(f"{url}/docs.json").json())
    assert "Classification" in schema and "Explanation" in schema
