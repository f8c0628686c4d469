"""The default models in a private model store, a real `bentoml serve` of them, and load on it, for the tests."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from loadtest import wrk
from loadtest.server import free_port
from loadtest.server import serve as serve_target
from tests.conftest import ROOT

DEFAULT = ROOT / "default_model" / "shapes-resnet10"
INT8 = DEFAULT.with_name("shapes-resnet10-int8")
STAR = ROOT / "docs" / "star.png"
__all__ = [
    "DEFAULT",
    "INT8",
    "STAR",
    "calls_per_engine",
    "free_port",
    "import_models",
    "serve",
    "stored",
    "under_load",
    "variant",
]


def import_models(home: Path, *folders: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    cmd = [sys.executable, "-m", "export.store", *map(str, folders)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)


@contextmanager
def serve(home: Path, log: Path, command: list[str] | None = None, **env: str):
    """Yield the base URL of the service, ready, against the model store at ``home`` (started by ``command``)."""
    with serve_target("service.service:Classifier", {"BENTOML_HOME": str(home), **env}, log, command=command) as url:
        yield url


def stored(home: Path, folder: Path) -> str:
    """The version the model store gives ``folder``."""
    env = {**os.environ, "BENTOML_HOME": str(home)}
    run = subprocess.run(
        [sys.executable, "-m", "export.store", str(folder)],
        cwd=ROOT,
        env=env,
        check=True,
        text=True,
        capture_output=True,
    )
    return run.stdout.strip().rsplit(":", 1)[1]


def variant(folder: Path, to: Path, onnx: bytes | None = None, **meta) -> Path:
    """A copy of an export renamed to the default model's name (a second version of it), with its graph or
    metadata changed."""
    shutil.copytree(folder, to)
    data = json.loads((to / "model.json").read_text()) | {"name": DEFAULT.name} | meta
    (to / "model.json").write_text(json.dumps(data))
    if onnx is not None:
        (to / "model.onnx").write_bytes(onnx)
    return to


def calls_per_engine(front: str) -> dict[str, float]:
    text = httpx.get(f"{front}/metrics", timeout=30).text
    return {k: float(v) for k, v in re.findall(r'resnet_engine_calls_total\{engine="([^"]+)"\} ([0-9.e+]+)', text)}


def under_load(front: str, seconds: float, during) -> dict:
    """wrk at 8 clients for ``seconds``, ``during()`` run a second in."""
    found: dict = {}
    runner = threading.Thread(target=lambda: found.update(wrk.run(front, [STAR], 8, seconds, threads=2)))
    runner.start()
    time.sleep(1)
    during()
    runner.join()
    return found
