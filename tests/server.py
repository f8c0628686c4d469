"""The default models in a private model store, and a real `bentoml serve` of them, for the tests."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from loadtest.server import free_port
from loadtest.server import serve as serve_target
from tests.conftest import ROOT

DEFAULT = ROOT / "default_model" / "shapes-resnet10"
INT8 = DEFAULT.with_name("shapes-resnet10-int8")
__all__ = ["DEFAULT", "INT8", "free_port", "import_models", "serve", "stored", "variant"]


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
