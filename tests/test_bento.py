"""`bentoml build` packs the service with the default models; the built Bento serves by its tag."""

import os
import subprocess
import sys
import tomllib

import httpx
import psutil
import pytest
import yaml

from loadtest.server import serve as serve_target
from tests.conftest import ROOT
from tests.server import DEFAULT, import_models

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bento")]
MODELS = "shapes-resnet10:latest,shapes-resnet10-int8:latest"


def test_build_and_serve_the_bento(tmp_path) -> None:
    home = tmp_path / "home"
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    env = {**os.environ, "BENTOML_HOME": str(home), "RESNET_MODELS": MODELS, "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = [sys.executable, "-m", "bentoml"]
    subprocess.run([*bentoml, "build"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    (bento,) = (home / "bentos" / "resnet-classifier").glob("*/bento.yaml")
    info = yaml.safe_load(bento.read_text())
    front, engine = info["services"]  # the engine is declared wherever the Bento is built, so that it runs anywhere
    assert (front["name"], engine["name"]) == ("resnet-classifier", "resnet-engine")
    assert {m["tag"].split(":")[0] for m in front["models"]} == {"shapes-resnet10", "shapes-resnet10-int8"}
    requirements = (bento.parent / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime-gpu" in requirements and "torch" not in requirements
    assert (bento.parent / "src" / "service" / "static" / "ui.html").is_file()

    for engines in ("0", "1"):  # the CPU host's topology, then the GPU host's (an engine beside the fronts)
        served = {**env, "RESNET_ENGINES": engines}
        with serve_target("resnet-classifier:latest", served, tmp_path / f"serve{engines}.log", cwd=tmp_path) as url:
            r = httpx.post(f"{url}/classify", files={"image": (ROOT / "docs" / "star.png").open("rb")}, timeout=30)
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "star"
            engine = [p for p in psutil.Process(url.pid).children(recursive=True) if "resnet-engine" in p.cmdline()]
            assert len(engine) == 1 and ("RESNET_ENGINE_TOKEN" in engine[0].environ()) == (engines == "1")


def test_the_gpu_bentofile_differs_only_by_the_cuda_libraries() -> None:
    cpu, gpu = (yaml.safe_load((ROOT / name).read_text()) for name in ("bentofile.yaml", "bentofile.gpu.yaml"))
    cpu_packages, gpu_packages = cpu["python"].pop("packages"), gpu["python"].pop("packages")
    assert cpu == gpu
    swapped = {"onnxruntime-gpu==1.31.1": "onnxruntime-gpu[cuda,cudnn]==1.31.1"}
    assert [swapped.get(p, p) for p in cpu_packages] == gpu_packages


def test_the_bento_carries_the_serve_extra() -> None:
    """What the service imports is in the Bento and its container (`pip install .[serve]` has it beside them)."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    packed = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    assert sorted(packed) == sorted(extra)
