"""Front and engine as separate servers, as two Kubernetes Deployments run them: the front calls the engine's URL."""

import sys
import time
from contextlib import ExitStack

import httpx
import pytest

from loadtest.server import serve as serve_command
from tests.server import DEFAULT, import_models

pytestmark = pytest.mark.xdist_group("split")


def test_front_and_engine_run_apart_and_answer_together(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    env = {"BENTOML_HOME": str(tmp_path)}
    split = [sys.executable, "-m", "service.split"]
    image = {"image": ("star.png", (DEFAULT.parents[1] / "docs" / "star.png").read_bytes(), "image/png")}
    with ExitStack() as engine_server:
        engine_cmd = [*split, "engine", "--host", "127.0.0.1"]
        engine_log = tmp_path / "engine.log"
        engine = engine_server.enter_context(serve_command("split engine", env, engine_log, command=engine_cmd))
        front_cmd = [*split, "front", "--engine", engine, "--host", "127.0.0.1"]
        with serve_command("split front", env, tmp_path / "front.log", command=front_cmd) as front:
            r = httpx.post(f"{front}/classify", files=image, timeout=30)
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "star", r.text
            for _ in range(50):  # the engine's access log line for the call, once it is flushed
                if "path=/infer" in engine_log.read_text():
                    break
                time.sleep(0.1)
            assert "path=/infer" in engine_log.read_text(), "the separate engine ran it"
            assert "resnet-engine" not in (tmp_path / "front.log").read_text(), "the front started no engine of its own"
            engine_server.close()  # the engine goes away under the running front
            r = httpx.post(f"{front}/classify", files=image, timeout=30)
            assert r.status_code == 503 and r.json()["error"] == "overloaded", "engine gone: 503, not 500"
