"""The GPU host's topology, forced on this CPU host (RESNET_ENGINES=1): one command, `bentoml serve`, runs the
front workers and an engine beside them that BentoML supervises; they talk over the Open Inference Protocol on the
engine's own socket, with a secret made at start. It answers as the in-process service does."""

import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import ROOT
from tests.server import DEFAULT, import_models, serve
from tests.test_engine_server import not_ready, ready
from tests.test_wire import probe_every_socket

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("topology")]
STAR = (ROOT / "docs" / "star.png").read_bytes()
MODELS = "shapes-resnet10:latest,shapes-resnet10-int8:latest"


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    home = tmp_path_factory.mktemp("managed")
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    env = {
        "RESNET_MODELS": MODELS,
        "RESNET_ENGINES": "1",
        "RESNET_FRONT_WORKERS": "2",
        "RESNET_MAX_LATENCY_MS": "10000",
    }
    with serve(home, home / "server.log", **env) as url:
        yield url


def workers(url, service: str) -> list[psutil.Process]:
    """The BentoML worker processes of ``service`` under the server started at ``url``."""
    below = psutil.Process(url.pid).children(recursive=True)
    return [p for p in below if "_bentoml_impl.worker.service" in " ".join(p.cmdline()) and service in p.cmdline()]


def environment(process: psutil.Process) -> dict[str, str]:
    return dict(e.split("=", 1) for e in Path(f"/proc/{process.pid}/environ").read_text().split("\0") if "=" in e)


def answers(url: str) -> list[tuple[int, object]]:
    """The same requests of every kind; their status and body, ``timing`` left out."""
    image = {"image": ("star.png", STAR, "image/png")}
    replies = [
        httpx.post(f"{url}/classify", files=image, data={"top_k": "3", "model": "shapes-resnet10-int8"}),
        httpx.post(f"{url}/classify_batch", files=[("images", ("a.png", STAR)), ("images", ("b.png", STAR))]),
        httpx.post(f"{url}/explain", files=image, data={"class_index": "2", "include_map": "true"}),
        httpx.post(f"{url}/embed", files=image, data={"policy": "crop"}),
        httpx.post(f"{url}/classify", files=image, data={"model": "nope"}),
    ]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 112, 144, 3), dtype=np.uint8)
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape), "data": pixels.ravel().tolist()}
    replies.append(httpx.post(f"{url}/v2/models/shapes-resnet10/infer", json={"inputs": [tensor]}, timeout=30))
    out = []
    for r in replies:
        body = r.json()
        for item in body.get("results", [body]):
            item.pop("timing", None)
        body.get("parameters", {}).pop("model_ms", None)
        body.get("parameters", {}).pop("batch_size", None)
        out.append((r.status_code, body))
    return out


def test_one_command_runs_fronts_and_an_engine_with_a_fresh_secret(managed) -> None:
    (engine,), fronts = workers(managed, "resnet-engine"), workers(managed, "resnet-classifier")
    assert len(fronts) == 2
    tokens = {environment(p)["RESNET_ENGINE_TOKEN"] for p in [engine, *fronts]}
    assert len(tokens) == 1 and len(tokens.pop()) >= 32, "one secret, made at start, shared by fronts and engine"
    assert "onnxruntime" not in " ".join(Path(f"/proc/{p.pid}/maps").read_text() for p in fronts), "fronts: no model"
    models = httpx.get(f"{managed}/models", timeout=30).json()
    assert [m["provider"] for m in models] == ["CPUExecutionProvider"] * 2, "reported by the engine"


def test_answers_equal_the_in_process_service(managed, url) -> None:
    split, local = answers(managed), answers(url)
    assert [s for s, _ in split] == [200, 200, 200, 200, 404, 200]
    for (_, a), (_, b) in zip(split, local, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose(
            np.array(flatten(a), dtype=float), np.array(flatten(b), dtype=float), rtol=1e-5, atol=1e-6
        )


def flatten(body: object) -> list[float]:
    """Every number of a body, in order (strings compared as equal by the key check and the status)."""
    if isinstance(body, dict):
        return [x for k in sorted(body) for x in flatten(body[k])]
    if isinstance(body, list):
        return [x for v in body for x in flatten(v)]
    return [float(body)] if isinstance(body, int | float) and not isinstance(body, bool) else []


def test_no_pickle_runs_on_any_socket_of_fronts_or_engine(managed, tmp_path) -> None:
    probe_every_socket([managed.pid], tmp_path)


def test_an_engine_killed_is_restarted_and_the_fronts_say_so_meanwhile(managed) -> None:
    (engine,) = workers(managed, "resnet-engine")
    engine.suspend()  # as good as gone (no answer, not even to health), but BentoML does not restart it yet
    assert not_ready(managed), "the fronts' heartbeat noticed"
    image = {"image": ("star.png", STAR, "image/png")}
    t = time.monotonic()
    refused = httpx.post(f"{managed}/classify", files=image, timeout=30)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert time.monotonic() - t < 2, "refused at once"
    os.kill(engine.pid, signal.SIGKILL)  # now gone: BentoML starts another
    assert ready(managed, within_s=120), "the engine came back"
    (again,) = workers(managed, "resnet-engine")
    assert again.pid != engine.pid
    # readiness answered from one front worker; the other's heartbeat comes round within a beat or two, and until
    # then it says 503 with Retry-After, never anything else: 8 answers in a row come, every one a star
    deadline, streak, seen = time.monotonic() + 30, 0, []
    while streak < 8 and time.monotonic() < deadline:
        answer = httpx.post(f"{managed}/classify", files=image, timeout=30)
        seen.append((answer.status_code, answer.headers.get("retry-after")))
        if answer.status_code == 200:
            assert answer.json()["predictions"][0]["label"] == "star", answer.text
            streak += 1
        else:
            assert seen[-1] == (503, "1"), answer.text
            streak = 0
            time.sleep(0.2)
    assert streak == 8, f"every front worker answers again: {seen}"
