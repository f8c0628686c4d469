"""What the model is doing, as a real Prometheus sees it: per-label answers, the out-of-distribution rate and the
drift gauge through a burst of shapes, a burst of photos and shapes again; the alert rules and every dashboard
panel evaluated live; and the verdict on every route equal to the export's own score."""

import io
import json
import shutil
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
import tritonclient.http as triton
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import contract
from export.reference import as_served, variants
from models.shapes import sample
from tests.conftest import IMAGES, ROOT
from tests.server import DEFAULT, free_port, import_models, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("telemetry")]
MODEL, RULES = "shapes-resnet10", ROOT / "deploy" / "prometheus" / "rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def shapes(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png(sample(rng, size=tuple(int(v) for v in rng.integers(64, 480, 2))).image) for _ in range(n)]


def photos() -> list[bytes]:
    originals = [Image.open(p) for p in sorted(IMAGES.iterdir())]
    return [png(img) for img in [*originals, *variants(originals)]]


@contextmanager
def prometheus(target: str, folder: Path):
    """Debian's Prometheus on loopback, scraping ``target`` every second with the project's rules loaded."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is installed by `make test` (Debian's prometheus package)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "resnet-front", "static_configs": [{"targets": [target.split("//")[1]]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    cmd = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(base):
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "prometheus.log").read_text()[-3000:]
            time.sleep(0.2)
        while not query(base, 'up{job="resnet-front"} == 1'):  # the first scrape
            assert time.monotonic() < deadline, "Prometheus never scraped the service"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready").status_code == 200
    except httpx.TransportError:
        return False


def query(prom: str, expr: str, at: float | None = None) -> list[dict]:
    """An instant query, now or at the Unix time ``at``."""
    params = {"query": expr} | ({} if at is None else {"time": at})
    answer = httpx.get(f"{prom}/api/v1/query", params=params).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def value(prom: str, expr: str, at: float | None = None) -> float:
    (series,) = query(prom, expr, at)
    return float(series["value"][1])


def scraped(prom: str, answers: float, timeout: float = 30) -> float:
    """Wait until Prometheus holds ``answers`` answers of MODEL; a time at which it does."""
    deadline = time.monotonic() + timeout
    while (got := value(prom, f'sum(resnet_answers_total{{model="{MODEL}"}})')) != answers:
        assert time.monotonic() < deadline, f"Prometheus has {got} answers, not {answers}"
        time.sleep(0.5)
    time.sleep(1.5)  # the recording and alert rules evaluated on it too
    return time.time()


def answered(url: str) -> float:
    """The answers of MODEL the service itself counts, to wait for Prometheus to hold them all."""
    text = httpx.get(f"{url}/metrics").text
    families = text_string_to_metric_families(text)
    return sum(
        s.value
        for f in families
        if f.name == "resnet_answers"
        for s in f.samples
        if s.labels.get("model") == MODEL and s.name.endswith("_total")
    )


def classify(url: str, images: list[bytes]) -> list[dict]:
    """Top-1 answers, 16 images a request."""
    out = []
    for i in range(0, len(images), 16):
        files = [("images", (f"{j}.png", data, "image/png")) for j, data in enumerate(images[i : i + 16])]
        response = httpx.post(f"{url}/classify_batch", files=files, data={"model": MODEL, "top_k": 1}, timeout=60)
        assert response.status_code == 200, response.text
        out += response.json()["results"]
    return out


def phase(prom: str, started: float, ended: float) -> tuple[float, float]:
    """(out-of-distribution rate, drift) of the answers between two times Prometheus held every answer of the
    phase before and of this one: counters read at both ends (``increase`` would extrapolate each series on its
    own, and the OOD counter's small start value makes it extrapolate less)."""
    m = f'{{model="{MODEL}"}}'
    ood, answers = (f"sum(resnet_{name}_total{m})" for name in ("ood", "answers"))
    rate = (value(prom, ood, ended) - value(prom, ood, started)) / (
        value(prom, answers, ended) - value(prom, answers, started)
    )
    return rate, value(prom, f"max(resnet_drift{m})", ended)


def alerts(prom: str) -> set[str]:
    found = httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in found if a["labels"].get("model") == MODEL}


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    home = tmp_path_factory.mktemp("telemetry")
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    models = f"{MODEL}:latest,{MODEL}-int8:latest"
    with serve(home, home / "server.log", RESNET_MODELS=models) as url, prometheus(url, home) as prom:
        yield url, prom


def test_prometheus_sees_labels_ood_and_drift_rise_and_fall(watched) -> None:
    url, prom = watched
    threshold = contract.read(DEFAULT).reference.drift_threshold
    before = {
        s["metric"]["label"]: float(s["value"][1]) for s in query(prom, f'resnet_answers_total{{model="{MODEL}"}}')
    }
    total = sum(before.values())

    known = classify(url, shapes(300, seed=4242))  # more than a drift window: it fills with shapes
    tally = Counter(r["predictions"][0]["label"] for r in known)
    shapes_done = scraped(prom, total + 300)
    per_label = {
        s["metric"]["label"]: float(s["value"][1]) for s in query(prom, f'resnet_answers_total{{model="{MODEL}"}}')
    }
    assert {k: per_label[k] - before.get(k, 0) for k in per_label} == {k: float(tally[k]) for k in per_label}
    shapes_drift = value(prom, f'max(resnet_drift{{model="{MODEL}"}})')
    assert 0 < shapes_drift < threshold, "a window of shapes is a window of the reference's kind"

    real = photos()
    flagged = sum(r["ood"]["flagged"] for r in classify(url, real))
    photos_done = scraped(prom, total + 300 + len(real))
    rate, drift = phase(prom, shapes_done, photos_done)
    assert rate == pytest.approx(flagged / len(real), abs=0.05) and rate > 0.9, "nearly every photo is flagged"
    assert drift > threshold, f"{len(real)} photos among the last 256 answers: drift {drift:.3f}"
    assert {"ResnetDrift", "ResnetOodRate"} <= alerts(prom), "both alerts are pending (their `for:` runs)"

    classify(url, shapes(300, seed=4343))
    again = scraped(prom, total + 600 + len(real))
    rate, drift = phase(prom, photos_done, again)
    assert rate < 0.05 and drift < threshold, "shapes again: the window holds shapes only"
    assert "ResnetDrift" not in alerts(prom)
    rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), "every rule evaluates on the real series"


def test_every_dashboard_panel_has_data(watched) -> None:
    url, prom = watched
    httpx.post(f"{url}/classify", files={"image": ("s.png", shapes(1, seed=1)[0], "image/png")}).raise_for_status()
    classify(url, shapes(20, seed=2))
    scraped(prom, answered(url))
    time.sleep(2)
    panels = json.loads(DASHBOARD.read_text())["panels"]
    empty = []
    for panel in [p for p in panels if not p["title"].startswith("Rollout:")]:  # tests/test_rollout_live.py's
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$model", ".*").replace("$__rate_interval", "1m")
            if not query(prom, expr):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, empty


def served_pixels(data: bytes) -> np.ndarray:
    return as_served(Image.open(io.BytesIO(data)), contract.read(DEFAULT).preprocessing)


def test_every_route_gives_the_exports_verdict(watched) -> None:
    """The service scores as the export thresholded: the same number from onnxruntime and contract.OodScore."""
    url, _ = watched
    meta = contract.read(DEFAULT)
    score = contract.OodScore.load(DEFAULT, meta.reference)
    session = onnxruntime.InferenceSession(str(DEFAULT / "model.onnx"), providers=["CPUExecutionProvider"])
    shape, photo = shapes(1, seed=7)[0], (IMAGES / "chelsea.png").read_bytes()
    for data, flagged in ((shape, False), (photo, True)):
        (embedding,) = session.run(["embedding"], {"pixels": served_pixels(data)[None]})
        expected = float(score(embedding)[0])
        image = {"image": ("i.png", data, "image/png")}
        for route in ("classify", "explain", "embed"):
            ood = httpx.post(f"{url}/{route}", files=image, timeout=30).json()["ood"]
            assert ood["flagged"] is flagged and ood["score"] == pytest.approx(expected, abs=1e-3), route
            assert ood["threshold"] == meta.reference.threshold
        client = triton.InferenceServerClient(url.split("//")[1])
        images = triton.InferInput("images", [1], "BYTES")
        images.set_data_from_numpy(np.array([data], dtype=object))
        result = client.infer(f"{MODEL}-image", [images])
        assert result.as_numpy("out_of_distribution").tolist() == [flagged]
        assert result.as_numpy("ood_score")[0] == pytest.approx(expected, abs=1e-3)


def rotated_jpeg_and_alpha_png() -> list[bytes]:
    """A JPEG whose EXIF orientation turns it a quarter, and a PNG with a transparent half."""
    photo = Image.open(IMAGES / "chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    jpeg, png = io.BytesIO(), io.BytesIO()
    photo.save(jpeg, "JPEG", quality=90, exif=exif.tobytes())
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(png, "PNG")
    return [jpeg.getvalue(), png.getvalue()]


def test_the_export_scores_what_the_service_feeds_the_model(watched) -> None:
    """Reference statistics are computed on the pixels the service makes (EXIF orientation, JPEG draft decoding,
    transparency on white): an image's score at export equals the served one."""
    url, _ = watched
    meta = contract.read(DEFAULT)
    score = contract.OodScore.load(DEFAULT, meta.reference)
    session = onnxruntime.InferenceSession(str(DEFAULT / "model.onnx"), providers=["CPUExecutionProvider"])
    for data in rotated_jpeg_and_alpha_png():
        (embedding,) = session.run(["embedding"], {"pixels": served_pixels(data)[None]})
        served = httpx.post(f"{url}/classify", files={"image": ("i", data)}, timeout=30).json()["ood"]["score"]
        assert served == pytest.approx(float(score(embedding)[0]), abs=1e-4)


def test_a_model_without_statistics_says_why(tmp_path) -> None:
    folder = tmp_path / MODEL
    shutil.copytree(DEFAULT, folder)
    (folder / "reference.npz").unlink()
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "reference": None}))
    import_models(tmp_path / "home", folder)
    with serve(tmp_path / "home", tmp_path / "server.log", RESNET_MODELS=f"{MODEL}:latest") as url:
        [listed] = httpx.get(f"{url}/models").json()
        assert listed["ood"]["scored"] is False and "export.reference" in listed["ood"]["reason"]
        photo = {"image": ("c.png", (IMAGES / "chelsea.png").read_bytes())}
        assert httpx.post(f"{url}/classify", files=photo, timeout=30).json()["ood"] is None
