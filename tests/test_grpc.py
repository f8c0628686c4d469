"""The Open Inference Protocol over gRPC, started by `bentoml serve` beside HTTP: Triton's gRPC client and the
bare generated stubs get the answers HTTP gives, the same refusals as gRPC statuses, behind the same token."""

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.conftest import IMAGES, ROOT
from tests.server import DEFAULT, import_models, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grpc")]
TOKEN, MODEL = "grpc-test-token", "shapes-resnet10"
FILES = [ROOT / "docs" / "star.png", IMAGES / "chelsea.png", IMAGES / "horse.png"]  # three sizes, two policies' worth


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """(the gRPC clients' findings, the server's HTTP base URL)."""
    home = tmp_path_factory.mktemp("grpc")
    import_models(home, DEFAULT)
    env = {"RESNET_MODELS": f"{MODEL}:latest", "RESNET_API_TOKEN": TOKEN, "RESNET_MAX_BODY_BYTES": str(4 * 2**20)}
    with serve(home, home / "server.log", **env) as url:
        cmd = [sys.executable, "-m", "tests.grpc_client", url.grpc, TOKEN, *map(str, FILES)]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        yield json.loads(run.stdout), url


def http_probabilities(url: str) -> np.ndarray:
    files = [("images", (f.name, f.read_bytes(), "image/png")) for f in FILES]
    r = httpx.post(f"{url}/classify_batch", files=files, data={"top_k": 6}, headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    rows = np.zeros((len(FILES), 6))
    for row, result in zip(rows, r.json()["results"], strict=True):
        for p in result["predictions"]:
            row[p["index"]] = p["probability"]
    return rows


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_health_metadata_and_index(answers) -> None:
    found, _ = answers
    t = found["triton"]
    assert t["live"] and t["ready"] and t["model_ready"], "health needs no token, as on HTTP"
    assert t["server"]["name"] == "resnet-serve" and "binary_tensor_data" in t["server"]["extensions"]
    assert [o["name"] for o in t["metadata"]["outputs"]] == [
        "probabilities",
        "labels",
        "ood_score",
        "out_of_distribution",
    ]
    assert t["index"] == [MODEL, f"{MODEL}-image"]


def test_images_answer_as_over_http(answers) -> None:
    found, url = answers
    expected = http_probabilities(url)
    for client in ("triton", "raw"):
        np.testing.assert_allclose(found[client]["probabilities"], expected, atol=1e-5, err_msg=client)
    assert found["triton"]["labels"][0] == ["star", "hexagon"] and found["triton"]["flagged"] == [False, True, True]


def test_tensor_request_answers_as_over_http(answers) -> None:
    found, url = answers
    pixels = triton_http.InferInput("pixels", [2, 112, 144, 3], "UINT8")
    pixels.set_data_from_numpy(np.random.default_rng(0).integers(0, 256, (2, 112, 144, 3), dtype=np.uint8))
    client = triton_http.InferenceServerClient(url.split("//")[1])
    logits = client.infer(MODEL, [pixels], headers=auth()).as_numpy("logits")
    np.testing.assert_allclose(found["triton"]["logits"], logits, atol=1e-5)
    assert found["triton"]["tensor_outputs"] == ["logits"], "only the outputs asked for"


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("not_an_image", "StatusCode.INVALID_ARGUMENT", "not a decodable image"),
        ("unknown_model", "StatusCode.NOT_FOUND", "unknown model 'nope'"),
        ("no_token", "StatusCode.UNAUTHENTICATED", "bearer token"),
        ("bad_version", "StatusCode.NOT_FOUND", "version 7"),
    ],
)
def test_refusals_are_grpc_statuses(answers, case: str, status: str, words: str) -> None:
    found, _ = answers
    got_status, message = found["triton"][case]
    assert got_status == status and words in message and "Traceback" not in message


def test_message_limits(answers) -> None:
    found, _ = answers
    assert found["raw"]["too_large"][0] == "StatusCode.RESOURCE_EXHAUSTED", "over RESNET_MAX_BODY_BYTES"
    assert found["raw"]["mismatched_raw"][0] == "StatusCode.INVALID_ARGUMENT"


def test_standard_health_service(answers) -> None:
    found, _ = answers
    assert found["health"] == {
        "server": "SERVING",
        "inference.GRPCInferenceService": "SERVING",
        "unknown": ["StatusCode.NOT_FOUND", "unknown service 'nope'"],
        "watched": "SERVING",
    }, "grpc.health.v1 as Kubernetes' gRPC probes ask it, without a token"


def test_the_clients_deadline_is_honoured() -> None:
    """A 0.5 s deadline ends the call and the model's work, though the request timeout is 30 s; a server that is
    not ready says NOT_SERVING."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.grpc_client", "deadline"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout)
    assert found["heard"] == "StatusCode.DEADLINE_EXCEEDED" and found["answered_s"] < 5
    assert found["work_stopped_s"] is not None and found["work_stopped_s"] < 5, found
    assert found["health"] == "NOT_SERVING"
