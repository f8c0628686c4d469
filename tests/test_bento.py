"""`bentoml build` packs the service with the default models; the built Bento serves by its tag."""

import os
import subprocess
import sys

import httpx
import pytest
import yaml

from loadtest.server import serve as serve_target
from tests.conftest import ROOT
from tests.server import DEFAULT, import_models

pytestmark = pytest.mark.xdist_group("bento")
MODELS = "shapes-resnet10:latest,shapes-resnet10-int8:latest"


def test_build_and_serve_the_bento(tmp_path) -> None:
    home = tmp_path / "home"
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    env = {**os.environ, "BENTOML_HOME": str(home), "RESNET_MODELS": MODELS, "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = [sys.executable, "-m", "bentoml"]
    subprocess.run([*bentoml, "build"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    (bento,) = (home / "bentos" / "resnet-classifier").glob("*/bento.yaml")
    info = yaml.safe_load(bento.read_text())
    (service,) = info["services"]  # one service: the model runs in its own process, no depends graph
    assert {m["tag"].split(":")[0] for m in service["models"]} == {"shapes-resnet10", "shapes-resnet10-int8"}
    requirements = (bento.parent / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime-gpu" in requirements and "torch" not in requirements
    assert (bento.parent / "src" / "service" / "static" / "ui.html").is_file()

    with serve_target("resnet-classifier:latest", env, tmp_path / "serve.log", cwd=tmp_path) as url:
        r = httpx.post(f"{url}/classify", files={"image": (ROOT / "docs" / "star.png").open("rb")}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "star"
