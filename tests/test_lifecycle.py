"""Model versions at run time through Triton's repository API, on a real `bentoml serve`: every loaded version on its
own routes, the default switched under wrk's load without dropping a request, a broken model refused with its reason
and nothing else changed, and the desired set kept when a front worker or the engine is killed and restarted."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton

from loadtest import wrk
from tests.conftest import ROOT
from tests.netns import another_host
from tests.server import DEFAULT, INT8, STAR, calls_per_engine, serve, stored, under_load, variant

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lifecycle")]
NAME = "shapes-resnet10"


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A model store holding NAME as fp32 (v1), as int8 (v2), with a truncated graph, and with metadata that
    contradicts its graph."""
    root = tmp_path_factory.mktemp("lifecycle")
    home = root / "home"
    found = {"v1": stored(home, DEFAULT), "v2": stored(home, variant(INT8, root / "v2"))}
    found["truncated"] = stored(home, variant(DEFAULT, root / "bad1", (DEFAULT / "model.onnx").read_bytes()[:5000]))
    found["contradicts"] = stored(home, variant(DEFAULT, root / "bad2", embedding_dim=64))
    return home, found


@pytest.fixture(scope="module")
def workers2(versions):
    """Two front workers, each with the model in its own process."""
    home, v = versions
    env = {"RESNET_MODELS": f"{NAME}:{v['v1']}", "RESNET_FRONT_WORKERS": "2"}
    with serve(home, home / "workers2.log", **env) as url:
        yield url


def change(url: str, action: str, name: str = NAME, **parameters) -> httpx.Response:
    return httpx.post(f"{url}/v2/repository/models/{name}/{action}", json={"parameters": parameters}, timeout=120)


def classify(url: str, model: str | None = None) -> dict:
    r = httpx.post(f"{url}/classify", files={"image": ("s.png", STAR.read_bytes())}, data={"model": model or ""})
    assert r.status_code == 200, r.text
    return r.json()


def index(url: str) -> list[tuple[str, str]]:
    return sorted((m["name"], m["version"]) for m in httpx.post(f"{url}/v2/repository/index").json())


def everywhere(url: str, version: str, within_s: float = 20) -> None:
    """Wait until 12 unversioned answers in a row (both workers, most likely) come from ``version``."""
    deadline, streak = time.monotonic() + within_s, 0
    while streak < 12:
        assert time.monotonic() < deadline, f"not every worker answers with {version}"
        streak = streak + 1 if classify(url)["version"] == version else 0


def test_every_loaded_version_has_its_own_routes_metadata_and_answers(workers2, versions) -> None:
    _, v = versions
    assert change(workers2, "load", version=v["v2"], default=False).status_code == 200
    c = triton.InferenceServerClient(workers2.removeprefix("http://"))
    assert c.get_model_metadata(NAME)["versions"] == [v["v1"], v["v2"]]
    assert c.get_model_metadata(NAME, v["v2"])["parameters"]["precision"] == "int8"
    assert c.get_model_metadata(NAME, v["v1"])["parameters"]["precision"] == "fp32"
    assert index(workers2) == sorted((n, v[k]) for n in (NAME, f"{NAME}-image") for k in ("v1", "v2"))
    pixels = triton.InferInput("pixels", [1, 96, 128, 3], "UINT8")
    pixels.set_data_from_numpy(np.random.default_rng(1).integers(0, 256, (1, 96, 128, 3), dtype=np.uint8))
    answers = {k: c.infer(NAME, [pixels], model_version=v[k]) for k in ("v1", "v2")}
    assert {k: a.get_response()["model_version"] for k, a in answers.items()} == {"v1": v["v1"], "v2": v["v2"]}
    assert c.infer(NAME, [pixels]).get_response()["model_version"] == v["v1"], "the default is still v1"
    assert not np.allclose(answers["v1"].as_numpy("logits"), answers["v2"].as_numpy("logits"), atol=1e-6)
    assert classify(workers2, f"{NAME}:{v['v2']}")["version"] == v["v2"]
    listed = {m["version"]: m for m in httpx.get(f"{workers2}/models").json()}
    assert {k: m["default"] for k, m in listed.items()} == {v["v1"]: True, v["v2"]: False}
    for key, folder in (("v1", DEFAULT), ("v2", INT8)):
        assert listed[v[key]]["parity"] == json.loads((folder / "model.json").read_text())["parity"], "its own report"
    assert change(workers2, "unload", version=v["v2"]).status_code == 200
    assert c.get_model_metadata(NAME)["versions"] == [v["v1"]]
    gone = httpx.post(f"{workers2}/classify", files={"image": STAR.read_bytes()}, data={"model": f"{NAME}:{v['v2']}"})
    assert gone.status_code == 404


def test_a_broken_model_fails_its_call_with_the_reason_and_changes_nothing(workers2, versions) -> None:
    _, v = versions
    before = index(workers2)
    truncated = change(workers2, "load", version=v["truncated"])
    assert truncated.status_code == 400 and "cannot be loaded by onnxruntime" in truncated.json()["error"]
    contradicts = change(workers2, "load", version=v["contradicts"])
    assert contradicts.status_code == 400 and "contradicts the graph" in contradicts.json()["error"]
    assert index(workers2) == before and classify(workers2)["version"] == v["v1"]
    missing = change(workers2, "load", version="nope")
    assert missing.status_code == 400 and "not in the model store" in missing.json()["error"], "Triton's answer"
    assert change(workers2, "load", version="../../etc").status_code == 400, "not a tag: a 400, never a 500"
    assert change(workers2, "unload").json()["error"].startswith(f"{NAME} is the default model")
    assert change(workers2, "unload").status_code == 409, "the last version of the default model stays"
    assert change(workers2, "unload", version="nope").status_code == 404
    assert change(workers2, "load", config="{}").status_code == 400, "files come from the model store only"
    assert index(workers2) == before


OUTSIDER = """
import httpx, json, sys
url, name, version = sys.argv[1:]
load = httpx.post(f"{url}/v2/repository/models/{name}/load", json={"parameters": {"version": version}}, timeout=60)
index = httpx.post(f"{url}/v2/repository/index", timeout=60)
print(json.dumps({"load": [load.status_code, load.json()], "index": index.status_code}))
"""


def test_changes_from_another_host_need_a_token(workers2, versions) -> None:
    """From a network namespace (tests/netns.py), as another host: a load is refused, the index is open."""
    _, v = versions
    with another_host() as other:
        run = other.python("-c", OUTSIDER, workers2.replace("127.0.0.1", other.host_address), NAME, v["v2"])
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout)
    assert found["load"][0] == 403 and "RESNET_API_TOKEN" in found["load"][1]["error"]
    assert found["index"] == 200, "reading the index is open"
    assert index(workers2) == [(NAME, v["v1"]), (f"{NAME}-image", v["v1"])]


def test_grpc_loads_serves_and_unloads_a_version(workers2, versions) -> None:
    """The same calls over gRPC (tritonclient.grpc and the bare stubs, in a child process: see tests/grpc_client.py),
    and a load from another host (a network namespace) refused."""
    _, v = versions
    with another_host() as other:
        outside = workers2.grpc.replace("127.0.0.1", other.host_address)
        refused = other.python("-m", "tests.grpc_client", "outsider", outside, v["v2"])
    assert refused.returncode == 0, refused.stderr[-3000:]
    assert json.loads(refused.stdout)[0] == "StatusCode.PERMISSION_DENIED"
    cmd = [sys.executable, "-m", "tests.grpc_client", "lifecycle", workers2.grpc, v["v2"]]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout)
    assert [NAME, v["v2"]] in found["index"] and found["versions"] == [v["v1"], v["v2"]] and found["version_ready"]
    assert (found["answered_by"], found["default_answered_by"]) == (v["v2"], v["v1"])
    assert found["after"] == [v["v1"]]
    status, message = found["last_of_the_default"]
    assert status == "StatusCode.FAILED_PRECONDITION" and "default model" in message


def test_every_front_worker_serves_grpc(workers2) -> None:
    """Both front workers listen on the gRPC port (the kernel spreads connections over them)."""
    port = int(workers2.grpc.rsplit(":", 1)[1])
    fronts = [p for p in psutil.Process(workers2.pid).children(recursive=True) if "resnet-classifier" in p.cmdline()]
    deadline = time.monotonic() + 60  # /readyz answered from one worker; the other may still be starting
    while True:
        listening = [
            p.pid for p in fronts if any(c.laddr.port == port for c in p.connections("tcp") if c.status == "LISTEN")
        ]
        if len(listening) == len(fronts) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(fronts) == 2 and sorted(listening) == sorted(p.pid for p in fronts)


def test_the_default_switches_under_load_and_no_request_is_dropped(workers2, versions) -> None:
    """wrk keeps 4 connections busy on unversioned /classify while v2 is loaded as the default, v1 unloaded, v1
    loaded back and v2 unloaded; a second client checks that each answer's numbers are those of the version it
    names."""
    _, v = versions
    load: dict = {}
    runner = threading.Thread(target=lambda: load.update(wrk.run(workers2, [STAR], 4, 16, threads=2, tally="version")))
    seen: list[tuple[int, str, float]] = []  # (status, version, top-1 probability)
    stop = threading.Event()

    def checker() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{workers2}/classify", files={"image": ("s.png", STAR.read_bytes())})
                answer = r.json() if r.status_code == 200 else {"version": "", "predictions": [{"probability": 0}]}
                seen.append((r.status_code, answer["version"], answer["predictions"][0]["probability"]))

    watcher = threading.Thread(target=checker)
    runner.start()
    watcher.start()
    time.sleep(2)
    assert change(workers2, "load", version=v["v2"]).status_code == 200
    everywhere(workers2, v["v2"])
    top = {k: classify(workers2, f"{NAME}:{v[k]}")["predictions"][0]["probability"] for k in ("v1", "v2")}
    assert change(workers2, "unload", version=v["v1"]).status_code == 200
    time.sleep(1)
    assert change(workers2, "load", version=v["v1"]).status_code == 200
    everywhere(workers2, v["v1"])
    assert change(workers2, "unload", version=v["v2"]).status_code == 200
    runner.join(30)
    stop.set()
    watcher.join(30)
    assert load["errors"] == 0 and load["socket_errors"] == 0, load
    assert set(load["tally"]) == {f"200 {v['v1']}", f"200 {v['v2']}"}, load["tally"]
    assert min(load["tally"].values()) > 20, load["tally"]
    by_version = {v[k]: top[k] for k in top}
    assert {status for status, _, _ in seen} == {200} and {version for _, version, _ in seen} == set(by_version)
    assert all(p == pytest.approx(by_version[version], abs=1e-6) for _, version, p in seen), "each names its producer"
    assert index(workers2) == [(NAME, v["v1"]), (f"{NAME}-image", v["v1"])]
    print(f"wrk through the switch: {load['tally']}; checker: {len(seen)} answers")


def killed(url: str, service: str) -> int:
    """SIGKILL one BentoML worker of ``service`` under the server at ``url``; its pid."""
    for process in psutil.Process(url.pid).children(recursive=True):
        try:
            command = process.cmdline()
        except psutil.Error:  # gone, or a zombie not yet reaped
            continue
        if "_bentoml_impl.worker.service" in " ".join(command) and service in command:
            os.kill(process.pid, signal.SIGKILL)
            return process.pid
    raise AssertionError(f"no {service} worker")


def ready(url: str, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "ready again"
        time.sleep(0.3)


def both_take_calls(url: str, within_s: float = 120) -> None:
    """Under load, each engine beside the fronts (its own socket) takes calls from the front workers, within the
    time BentoML may take to restart one."""
    deadline, before = time.monotonic() + within_s, calls_per_engine(url)
    while True:
        load = wrk.run(url, [STAR], 8, 3, threads=2)
        assert load["errors"] == 0 and load["socket_errors"] == 0, load
        after = calls_per_engine(url)
        assert sorted(Path(k).name for k in after) == ["engine-0.sock", "engine-1.sock"], after
        if all(after[k] - before.get(k, 0) > 5 for k in after):
            return
        assert time.monotonic() < deadline, f"both engines get work: {before} → {after}"


def test_the_desired_set_survives_restarts_of_an_engine_and_a_front(versions) -> None:
    """Fronts and two engines beside them, each front worker reaching both: a load reaches the engines through the
    front (a broken one fails there with its reason); an engine killed under load costs no answer, and comes back
    serving the same set and taking calls; a killed front worker comes back serving the same set."""
    home, v = versions
    env = {"RESNET_MODELS": f"{NAME}:{v['v1']}", "RESNET_ENGINES": "2", "RESNET_FRONT_WORKERS": "2"}
    with serve(home, home / "split.log", **env) as url:
        truncated = change(url, "load", version=v["truncated"])
        assert truncated.status_code == 400 and "cannot be loaded by onnxruntime" in truncated.json()["error"]
        assert change(url, "load", version=v["v2"]).status_code == 200
        everywhere(url, v["v2"])
        both_take_calls(url)
        load = under_load(url, 5, lambda: killed(url, "resnet-engine"))
        assert load["errors"] == 0 and load["socket_errors"] == 0 and load["requests"] > 20, load
        ready(url)
        everywhere(url, v["v2"])
        both_take_calls(url)
        assert index(url) == sorted((n, v[k]) for n in (NAME, f"{NAME}-image") for k in ("v1", "v2"))
        killed(url, "resnet-classifier")
        time.sleep(1)
        ready(url)
        everywhere(url, v["v2"], within_s=60)
        assert [(m["version"], m["default"]) for m in httpx.get(f"{url}/models").json()] == [
            (v["v1"], False),
            (v["v2"], True),
        ]
