"""Start a real ``bentoml serve`` on a free port, against a private model store, for the tests."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ROOT

DEFAULT = ROOT / "default_model" / "shapes-resnet10"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_models(home: Path, *folders: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    cmd = [sys.executable, "-m", "export.store", *map(str, folders)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)


@contextmanager
def serve(home: Path, log: Path, ready_timeout: float = 120, **env: str):
    """Yield the base URL of a ready server; stop it (and its workers) afterwards."""
    port = free_port()
    full_env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **env}
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.service:Classifier", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"server not ready in {ready_timeout}s:\n{log.read_text()[-4000:]}")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
