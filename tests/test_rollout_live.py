"""A rollout on a real `bentoml serve` with two front workers: a canary's share within binomial bounds on every route
and both wires, sticky routing keys that stay when the canary grows, shadows compared on the same requests (int8
agrees, a version with two labels swapped does not, and the alert fires in a real Prometheus), promote and roll back
under wrk's load, and the rollout kept across a restart."""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

import contract
from loadtest import wrk
from tests.conftest import ROOT
from tests.server import DEFAULT, INT8, serve, stored, variant
from tests.test_lifecycle import STAR, change, everywhere
from tests.test_telemetry import prometheus, query, shapes

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("rollout")]
NAME = "shapes-resnet10"


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A model store holding NAME as fp32 (v1), as int8 (v2), and as fp32 whose first two labels swap places."""
    root = tmp_path_factory.mktemp("rollout")
    home = root / "home"
    labels = contract.read(DEFAULT).labels
    swapped = [labels[1], labels[0], *labels[2:]]
    found = {"v1": stored(home, DEFAULT), "v2": stored(home, variant(INT8, root / "v2"))}
    found["swapped"] = stored(home, variant(DEFAULT, root / "swapped", labels=swapped))
    return home, found


@pytest.fixture(scope="module")
def served(versions):
    home, v = versions
    env = {"RESNET_MODELS": f"{NAME}:{v['v1']}", "RESNET_FRONT_WORKERS": "2", "RESNET_STATE_DIR": str(home / "state")}
    env["RESNET_SHADOW_MAX_BUSY"] = "1"  # every copy runs, to compare all of them (drops: tests/test_batcher.py)
    with serve(home, home / "server.log", **env) as url, prometheus(url, home) as prom:
        yield url, prom


def version_of(url: str, key: str | None = None, route: str = "classify", **data: str) -> str:
    headers = {} if key is None else {"x-routing-key": key}
    files = {"images" if route == "classify_batch" else "image": ("s.png", STAR.read_bytes())}
    r = httpx.post(f"{url}/{route}", files=files, data=data, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    return answer["results"][0]["version"] if route == "classify_batch" else answer["version"]


def versions_of(url: str, keys: list[str | None]) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda key: version_of(url, key), keys))


def rollout(url: str) -> dict[str, dict | None]:
    return {m["version"]: m["rollout"] for m in httpx.get(f"{url}/models").json()}


def test_bad_rollouts_are_refused_with_the_reason(served, versions) -> None:
    url, _ = served
    _, v = versions
    cases = [
        ({"version": v["v2"], "traffic": 150}, "0 to 100"),
        ({"version": v["v1"], "shadow": True}, "is the default"),
        ({"version": v["v2"], "traffic": 10, "default": True}, "never changes the default"),
        ({"version": v["v2"], "traffic": 10, "shadow": True}, "not both"),
        ({"version": v["v2"], "shadow": True, "shadow_rate": 2}, "0 to 1"),
        ({"version": "nope", "traffic": 10}, "not in the model store"),
    ]
    for params, reason in cases:
        r = change(url, "load", **params)
        assert r.status_code == 400 and reason in r.json()["error"], (params, r.text)
    assert change(url, "load", version=v["v2"], traffic=60).status_code == 200
    r = change(url, "load", version=v["swapped"], traffic=50)
    assert r.status_code == 400 and "110 %" in r.json()["error"]
    assert rollout(url) == {v["v1"]: None, v["v2"]: {"traffic": 60.0}}, "the refused one changed nothing"
    assert change(url, "unload", version=v["v2"]).status_code == 200


def test_a_canary_takes_its_share_and_keys_stick_on_every_route_and_wire(served, versions) -> None:
    url, _ = served
    _, v = versions
    assert change(url, "load", version=v["v2"], traffic=20).status_code == 200
    n = 1000
    drawn = versions_of(url, [None] * n).count(v["v2"])
    assert abs(drawn - 0.2 * n) < 4 * (n * 0.2 * 0.8) ** 0.5, f"{drawn} of {n} on the canary"

    keys = [f"user-{i}" for i in range(200)]
    at20 = versions_of(url, keys)
    assert versions_of(url, keys) == at20, "a key keeps its version while the weights stay"
    on_v2, on_v1 = keys[at20.index(v["v2"])], keys[at20.index(v["v1"])]
    for route in ("classify_batch", "explain", "embed"):
        assert (version_of(url, on_v2, route), version_of(url, on_v1, route)) == (v["v2"], v["v1"]), route
    assert version_of(url, on_v2, model=f"{NAME}:{v['v1']}") == v["v1"], "a request naming a version stays on it"
    client = triton.InferenceServerClient(url.split("//")[1])
    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([STAR.read_bytes()], dtype=object))
    for key, expected in ((on_v2, v["v2"]), (on_v1, v["v1"])):
        answer = client.infer(f"{NAME}-image", [images], headers={"x-routing-key": key}).get_response()
        assert answer["model_version"] == expected

    assert change(url, "load", version=v["v2"], traffic=50).status_code == 200
    at50 = versions_of(url, keys)
    assert all(b == v["v2"] for a, b in zip(at20, at50, strict=True) if a == v["v2"]), "keys on v2 stay there"
    assert at50.count(v["v2"]) > at20.count(v["v2"])

    run = subprocess.run(
        [sys.executable, "-m", "tests.grpc_client", "rollout", url.grpc, v["v2"], *keys[:40]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    grpc = json.loads(run.stdout)
    expected = versions_of(url, keys[:40])  # over HTTP, at the 20 % the gRPC load set again
    assert grpc["tensor"] == expected and grpc["image"] == expected, "the same key, the same version, on gRPC"
    assert set(grpc["named"]) == {v["v1"]} and grpc["too_much"][0] == "StatusCode.INVALID_ARGUMENT"
    assert change(url, "load", version=v["v2"], traffic=0).status_code == 200
    assert set(versions_of(url, [None] * 50)) == {v["v1"]}, "0 ends the canary"


def metric(url: str, name: str, **labels: str) -> float:
    lines = [line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith(name + "{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if all(f'{k}="{v}"' in line for k, v in labels.items()))


def compared(url: str, version: str, n: int) -> dict:
    """The shadow's comparison in GET /models once it holds ``n`` images (it is made after each answer is sent)."""
    deadline = time.monotonic() + 60
    while True:
        found = {m["version"]: m for m in httpx.get(f"{url}/models").json()}[version]["comparison"]
        if found["compared"] >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def top1(url: str, images: list[bytes], model: str | None = None) -> list[tuple[str, str]]:
    """(version, top-1 label) of each image, one request each."""
    out = []
    for data in images:
        r = httpx.post(f"{url}/classify", files={"image": ("i.png", data)}, data={"model": model or ""}, timeout=30)
        assert r.status_code == 200, r.text
        out.append((r.json()["version"], r.json()["predictions"][0]["label"]))
    return out


@pytest.mark.parametrize("shadow", ["v2", "swapped"])
def test_a_shadow_is_compared_on_the_same_requests_and_its_answers_never_reach_the_client(
    served, versions, shadow: str
) -> None:
    url, prom = served
    _, v = versions
    assert change(url, "load", version=v[shadow], shadow=True).status_code == 200
    images = shapes(80, seed={"v2": 11, "swapped": 12}[shadow])
    live = top1(url, images)
    assert {version for version, _ in live} == {v["v1"]}, "every client answer comes from the default"
    found = compared(url, v[shadow], len(images))
    direct = top1(url, images, f"{NAME}:{v[shadow]}")
    agreement = np.mean([a[1] == b[1] for a, b in zip(live, direct, strict=True)])
    assert (found["compared"], found["dropped"]) == (len(images), 0), found
    assert found["top1_agreement"] == pytest.approx(agreement, abs=0.01), found
    assert metric(url, "resnet_shadow_compared_total", version=v[shadow]) == len(images)
    assert found["p50_model_ms"]["shadow"] > 0 and found["p50_model_ms"]["default"] > 0
    assert set(found["ood_rate"]) == {"shadow", "default"}
    if shadow == "v2":
        assert agreement > 0.95, "int8 agrees with fp32"
    else:
        assert agreement < 0.9, "two labels swapped: the answers naming them disagree"
        deadline = time.monotonic() + 60
        while not alerted(prom, v[shadow]):
            assert time.monotonic() < deadline, "ResnetShadowDisagrees is not pending"
            time.sleep(1)
        assert not alerted(prom, v["v2"])
        for expr in rollout_panels():
            assert query(prom, expr), expr
    assert change(url, "load", version=v[shadow], shadow=False).status_code == 200


def alerted(prom: str, version: str) -> bool:
    found = httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
    return any(a["labels"]["alertname"] == "ResnetShadowDisagrees" and a["labels"]["version"] == version for a in found)


def rollout_panels() -> list[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    targets = [t for p in dashboard["panels"] if p["title"].startswith("Rollout:") for t in p["targets"]]
    return [t["expr"].replace("$model", ".*").replace("$__rate_interval", "1m") for t in targets]


def test_promote_and_roll_back_under_load_lose_nothing(served, versions) -> None:
    """wrk on unversioned /classify while v2, a canary, is promoted and then unloaded: the default goes back to v1,
    not to the swapped version loaded after it."""
    url, _ = served
    _, v = versions
    assert change(url, "load", version=v["swapped"], default=False).status_code == 200
    assert change(url, "load", version=v["v2"], traffic=30).status_code == 200
    load: dict = {}
    runner = threading.Thread(target=lambda: load.update(wrk.run(url, [STAR], 4, 12, threads=2, tally="version")))
    runner.start()
    time.sleep(2)
    assert change(url, "load", version=v["v2"]).status_code == 200
    everywhere(url, v["v2"])
    assert rollout(url)[v["v2"]] is None, "promoted: no longer a canary"
    assert change(url, "unload", version=v["v2"]).status_code == 200
    everywhere(url, v["v1"])
    runner.join(30)
    assert load["errors"] == 0 and load["socket_errors"] == 0, load
    assert set(load["tally"]) == {f"200 {v['v1']}", f"200 {v['v2']}"}, load["tally"]
    assert change(url, "unload", version=v["swapped"]).status_code == 200


def test_a_restart_keeps_the_rollout(served, versions) -> None:
    """A server started on the same RESNET_STATE_DIR keeps the weights and the shadow, and routes each key as the
    first one does."""
    url, _ = served
    home, v = versions
    assert change(url, "load", version=v["v2"], traffic=40).status_code == 200
    assert change(url, "load", version=v["swapped"], shadow=True, shadow_rate=0.5).status_code == 200
    keys = [f"session-{i}" for i in range(60)]
    before, plan = versions_of(url, keys), rollout(url)
    assert plan == {v["v1"]: None, v["v2"]: {"traffic": 40.0}, v["swapped"]: {"shadow_rate": 0.5}}
    env = {"RESNET_MODELS": f"{NAME}:{v['v1']}", "RESNET_STATE_DIR": str(home / "state")}
    with serve(home, home / "restarted.log", **env) as again:
        assert rollout(again) == plan and versions_of(again, keys) == before
