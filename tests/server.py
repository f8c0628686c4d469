"""The default models in a private model store, and a real `bentoml serve` of them, for the tests."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from loadtest.server import free_port
from loadtest.server import serve as serve_target
from tests.conftest import ROOT

DEFAULT = ROOT / "default_model" / "shapes-resnet10"
__all__ = ["DEFAULT", "free_port", "import_models", "serve"]


def import_models(home: Path, *folders: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    cmd = [sys.executable, "-m", "export.store", *map(str, folders)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)


@contextmanager
def serve(home: Path, log: Path, command: list[str] | None = None, **env: str):
    """Yield the base URL of the service, ready, against the model store at ``home`` (started by ``command``)."""
    with serve_target("service.service:Classifier", {"BENTOML_HOME": str(home), **env}, log, command=command) as url:
        yield url
