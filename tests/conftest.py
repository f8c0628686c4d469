"""Shared paths and fixtures, and the fast tier's rule: a test that starts a process is marked ``slow``."""

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
REFERENCE = SHARED / "reference"
RUNNING = {"slow": True}  # whether the test being set up, run or torn down is marked slow


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    RUNNING["slow"] = item.get_closest_marker("slow") is not None


@pytest.fixture(scope="session", autouse=True)
def fast_tests_start_no_process():
    """Servers, containers, browsers and child processes belong to the ``slow`` tier (its fixtures too): a test
    outside it that starts one fails here, so ``make test-fast`` stays fast."""
    start = subprocess.Popen.__init__

    def guarded(self, *args, **kwargs) -> None:
        if not RUNNING["slow"]:
            raise AssertionError(f"a test outside the slow tier starts a process ({args[0]!r}): mark it slow")
        start(self, *args, **kwargs)

    subprocess.Popen.__init__ = guarded
    yield
    subprocess.Popen.__init__ = start


@pytest.fixture(scope="session")
def shared_images() -> list[Path]:
    paths = sorted(IMAGES.iterdir())
    assert paths, f"no images in {IMAGES}"
    return paths


@pytest.fixture(scope="session")
def url(tmp_path_factory):
    """A real `bentoml serve` with the committed default model, fp32 and int8 (one per xdist worker)."""
    from tests.server import DEFAULT, import_models, serve

    home = tmp_path_factory.mktemp("bentoml")
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    models = "shapes-resnet10:latest,shapes-resnet10-int8:latest"
    env = {
        "RESNET_MODELS": models,
        "RESNET_MAX_LATENCY_MS": "10000",
        "RESNET_MAX_BODY_BYTES": str(4 * 2**20),
        "RESNET_MAX_CONCURRENCY": "512",
    }
    with serve(home, home / "server.log", **env) as base:
        yield base


@contextmanager
def split_servers(root: Path, engine_env: dict | None = None):
    """The engine server (token required, ``engine_env`` added to its settings) and a front calling it, as on
    two hosts; the front's model store holds no ONNX file, since only the engine needs one."""
    from loadtest.server import serve as serve_command
    from tests.server import DEFAULT, import_models, serve

    home, front_home = root / "engine-home", root / "front-home"
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    shutil.copytree(home, front_home)
    for onnx in front_home.rglob("model.onnx"):
        onnx.unlink()
    models, token = "shapes-resnet10:latest,shapes-resnet10-int8:latest", "engine-secret-for-tests"
    env = {"BENTOML_HOME": str(home), "RESNET_MODELS": models, "RESNET_ENGINE_TOKEN": token, **(engine_env or {})}
    command = [sys.executable, "-m", "service.engine.server", "--host", "127.0.0.1"]
    engine_log = home / "engine.log"
    with serve_command("engine", env, engine_log, command=command, ready_path="/v2/health/ready") as engine:
        front_env = {"RESNET_MODELS": models, "RESNET_ENGINE_URL": engine, "RESNET_ENGINE_TOKEN": token}
        with serve(front_home, front_home / "front.log", **front_env) as front:
            yield {
                "engine": engine,
                "front": front,
                "token": token,
                "engine_log": engine_log,
                "env": env,
                "command": command,
            }


@pytest.fixture(scope="session")
def split(tmp_path_factory):
    with split_servers(tmp_path_factory.mktemp("split")) as servers:
        yield servers
