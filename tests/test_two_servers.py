"""Two `bentoml serve` under one BENTOML_HOME: each keeps its own metrics (BentoML's shared multiprocess folder
would be emptied by the second start, and the first server's counters would vanish)."""

import re

import httpx
import pytest

from tests.conftest import IMAGES
from tests.server import DEFAULT, import_models, serve

pytestmark = pytest.mark.slow

PHOTO = ("chelsea.png", (IMAGES / "chelsea.png").read_bytes())


def images_counted(url: str) -> float:
    """The service's own count of images accepted, over every label."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^resnet_images_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def classify(url: str, n: int) -> None:
    for _ in range(n):
        assert httpx.post(f"{url}/classify", files={"image": PHOTO}, timeout=60).status_code == 200


def test_the_first_servers_counters_keep_counting(tmp_path) -> None:
    home = tmp_path / "home"
    import_models(home, DEFAULT)
    env = {"RESNET_MODELS": "shapes-resnet10:latest"}
    with serve(home, tmp_path / "first.log", **env) as first:
        classify(first, 3)
        assert images_counted(first) == 3
        with serve(home, tmp_path / "second.log", **env) as second:
            classify(second, 2)
            classify(first, 1)
            assert images_counted(first) == 4, "the first server's counters survive the second start"
            assert images_counted(second) == 2, "and the two do not mix"
            assert "bentoml_service_request_total{" in httpx.get(f"{first}/metrics").text, "BentoML's own, beside"
