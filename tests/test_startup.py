"""Start-up faults: a missing model, a corrupt ONNX file, metadata that contradicts the graph."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.server import DEFAULT, import_models

pytestmark = pytest.mark.slow


def check(home, models: str, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "RESNET_MODELS": models, "RESNET_GRPC_PORT": "0", **settings}
    return subprocess.run([sys.executable, "-m", "service.check"], cwd=ROOT, env=env, capture_output=True, text=True)


def broken_copy(tmp_path, change) -> str:
    folder = tmp_path / "shapes-resnet10"
    shutil.copytree(DEFAULT, folder)
    change(folder)
    import_models(tmp_path / "home", folder)
    return "shapes-resnet10:latest"


def test_a_good_model_passes(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    proc = check(tmp_path, "shapes-resnet10:latest")
    assert proc.returncode == 0 and "ok: shapes-resnet10" in proc.stdout


def test_missing_model(tmp_path) -> None:
    proc = check(tmp_path, "no-such-model:latest")
    assert proc.returncode == 1 and "no-such-model" in proc.stderr and "Traceback" not in proc.stderr


def _garbage(folder) -> None:
    (folder / "model.onnx").write_bytes(b"not a protobuf")


def _more_classes(folder) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta["num_classes"], meta["labels"] = 7, [*meta["labels"], "extra"]
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "message"),
    [(_garbage, "cannot be loaded by onnxruntime"), (_more_classes, "metadata contradicts the graph")],
)
def test_broken_model_is_refused(tmp_path, change, message) -> None:
    proc = check(tmp_path / "home", broken_copy(tmp_path, change))
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_taken_grpc_port_stops_the_pre_flight_check(tmp_path) -> None:
    """Inside `bentoml serve` the first worker would fail to bind and be restarted again and again."""
    import_models(tmp_path, DEFAULT)
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = str(held.getsockname()[1])
        proc = check(tmp_path, "shapes-resnet10:latest", RESNET_GRPC_PORT=port)
    assert proc.returncode == 1 and f"RESNET_GRPC_PORT {port} cannot be bound" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert check(tmp_path, "shapes-resnet10:latest", RESNET_GRPC_PORT=port).returncode == 0, "free again"


def test_require_gpu_without_cuda_stops_the_pre_flight_check(tmp_path) -> None:
    """The check asks for the providers the service will use: on this host (no GPU) CUDA is not usable."""
    import_models(tmp_path, DEFAULT)
    proc = check(tmp_path, "shapes-resnet10:latest", RESNET_REQUIRE_GPU="1")
    assert proc.returncode == 1 and "RESNET_REQUIRE_GPU=1 but CUDA is unavailable" in proc.stderr
    assert check(tmp_path, "shapes-resnet10:latest", RESNET_PROVIDERS="CPUExecutionProvider").returncode == 0


def test_a_kept_desired_set_is_what_the_check_loads(tmp_path) -> None:
    """With RESNET_STATE_DIR set, the service serves the set kept there (loads at run time), not RESNET_MODELS."""
    import_models(tmp_path, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    state = tmp_path / "state"
    first = check(tmp_path, "shapes-resnet10:latest", RESNET_STATE_DIR=str(state))
    assert first.returncode == 0 and "ok: shapes-resnet10:" in first.stdout and "int8" not in first.stdout
    kept = json.loads((state / "models.json").read_text())
    kept["tags"].append("gone:1")  # loaded once, since deleted from the store
    (state / "models.json").write_text(json.dumps(kept))
    proc = check(tmp_path, "shapes-resnet10-int8:latest", RESNET_STATE_DIR=str(state))
    assert proc.returncode == 1 and "model gone:1 cannot be served" in proc.stderr, proc.stderr
    unwritable = check(tmp_path, "shapes-resnet10:latest", RESNET_STATE_DIR="/proc/no-such-folder")
    assert (
        unwritable.returncode == 1 and "RESNET_STATE_DIR" in unwritable.stderr and "Traceback" not in unwritable.stderr
    )
