"""Many engines behind a front: RESNET_ENGINE_URL's list, each call to the least busy engine, no answer lost when
an engine dies or hangs under load, loads reaching every engine, per-engine figures in /metrics; and the parts
(the address list, the retry budget) on their own."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest

from loadtest import wrk
from loadtest.server import free_port
from loadtest.server import serve as serve_command
from service.engine import addresses
from service.engine.member import Member
from service.engine.remote import RETRY_TOKENS, STARTING_S, RemoteEngine, majority
from service.errors import ApiError
from service.metrics import GONE_S
from tests.conftest import ROOT
from tests.server import DEFAULT, INT8, STAR, calls_per_engine, import_models, serve, stored, under_load, variant

pytestmark = pytest.mark.xdist_group("fleet")
TOKEN = "fleet-secret-for-tests"
MODELS = "shapes-resnet10:latest"


def test_the_engine_list_parses_or_says_why() -> None:
    assert addresses.parse(" http://a:1, https://b.example:443/ ,unix:///run/e.sock") == (
        "http://a:1",
        "https://b.example:443",
        "unix:///run/e.sock",
    )
    for bad, why in [
        ("http://a", "http://host:port"),
        ("ftp://a:1", "http://host:port"),
        ("http://a:99999", "0 to 65535"),
        ("http://a:1/v2", "base URL only"),
        ("unix://relative.sock", "absolute"),
    ]:
        with pytest.raises(addresses.BadAddress, match=why):
            addresses.parse(bad)


def test_a_name_means_each_of_its_addresses() -> None:
    assert addresses.resolve("http://localhost:3001") == ["http://127.0.0.1:3001"]
    assert addresses.resolve("http://10.0.0.7:3001") == ["http://10.0.0.7:3001"], "a literal is itself"
    assert addresses.resolve("http://no-such-engine.invalid:3001") == [], "not (yet) resolvable: no engine"


def test_retries_are_a_tenth_of_calls() -> None:
    engine = RemoteEngine(("http://127.0.0.1:9",), "", 30, ())
    granted = sum(engine._may_retry() for _ in range(100))
    assert granted == RETRY_TOKENS, "a full bucket, then nothing"
    for _ in range(50):  # fifty calls earn five retries
        engine._earn()
    assert sum(engine._may_retry() for _ in range(100)) == 5


def test_an_engine_that_joins_gets_the_fleets_set_with_this_fronts_versions_added() -> None:
    engine = RemoteEngine(("http://a:1",), "", 1, ("m:1", "x:1"))
    empty = {"traffic": {}, "shadows": {}, "previous": {}}
    engine.shared = {"tags": ["m:1", "x:1"], "defaults": {"m": "m:1", "x": "x:1"}, **empty}
    fleet = {"tags": ["m:1", "m:2"], "defaults": {"m": "m:2"}, **empty, "traffic": {"m:1": 10.0}}
    assert engine._joined(fleet) == {
        "tags": ["m:1", "m:2", "x:1"],
        "defaults": {"m": "m:2", "x": "x:1"},
        **empty,
        "traffic": {"m:1": 10.0},
    }, "the fleet's defaults and rollouts, and no version this front routes to missing"
    assert engine._joined(None) == engine.shared, "alone, the front's own"


def test_engines_that_differ_are_given_the_set_most_of_them_hold() -> None:
    empty = {"traffic": {}, "shadows": {}, "previous": {}}
    one = {"tags": ["m:1"], "defaults": {"m": "m:1"}, **empty}
    two = {"tags": ["m:1", "m:2"], "defaults": {"m": "m:2"}, **empty}
    other = {"tags": ["m:1", "m:3"], "defaults": {"m": "m:3"}, **empty}
    assert majority([two, one, two]) == two
    assert majority([two, one]) == majority([one, two]) == one, "a tie: fewer versions"
    assert majority([other, two]) == majority([two, other]) == two, "then JSON order, the same on every front"


def test_an_engine_refuses_a_set_that_is_not_one() -> None:
    from service.engine.server import _shared

    good = {"tags": ["m:1"], "defaults": {"m": "m:1"}, "traffic": {}, "shadows": {}, "previous": {}}
    assert _shared(json.dumps(good).encode()) == good
    wrong = [
        {**good, "tags": "m:1"},
        {**good, "traffic": {"m:1": "x"}},
        {**good, "traffic": {"m:1": True}},
        {**good, "traffic": {"m:1": 101}},
        {**good, "shadows": {"m:2": 0.5}},
        {**good, "defaults": {"m": "m:9"}},
        {k: good[k] for k in ("tags", "defaults")},
    ]
    nan = json.dumps(good).replace('"traffic": {}', '"traffic": {"m:1": NaN}').encode()
    for bad in [b"", b"[]", nan, *(json.dumps(w).encode() for w in wrong)]:
        with pytest.raises(ApiError) as refused:
            _shared(bad)
        assert refused.value.status == 400


@pytest.mark.slow
def test_a_malformed_list_stops_the_preflight_check(tmp_path) -> None:
    env = {**os.environ, "RESNET_ENGINE_URL": "http://engine-a:3001,engine-b", "BENTOML_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "service.check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "RESNET_ENGINE_URL" in run.stderr and "engine-b" in run.stderr, run.stderr


HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # three hosts, as far as the fleet can tell


def engine_command(host: str) -> list[str]:
    return [sys.executable, "-m", "service.engine.server", "--host", host]


def start_engine(host: str, port: int, env: dict, log: Path):
    """An engine server (its token set) on ``host``, ready."""
    command, ready = engine_command(host), "/v2/health/ready"
    return serve_command(host, env, log, command=command, ready_path=ready, port=port, host=host)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three engine servers, each on a loopback address of its own and the same port, and a front (two workers)
    that reaches them through one list."""
    root = tmp_path_factory.mktemp("fleet")
    home = root / "home"
    import_models(home, DEFAULT)
    env = {"BENTOML_HOME": str(home), "RESNET_MODELS": MODELS, "RESNET_ENGINE_TOKEN": TOKEN}
    port = free_port()
    with ExitStack() as stack:
        engines = [stack.enter_context(start_engine(h, port, env, root / f"{h}.log")) for h in HOSTS]
        front_env = {"RESNET_MODELS": MODELS, "RESNET_ENGINE_URL": ",".join(engines), "RESNET_ENGINE_TOKEN": TOKEN}
        mend = {"RESNET_FLEET_MEND_S": "10"}  # engines that differ this long are given the set most of them hold
        front = stack.enter_context(serve(home, root / "front.log", RESNET_FRONT_WORKERS="2", **front_env, **mend))
        yield {"front": front, "engines": engines, "env": env, "root": root, "stack": stack, "port": port}


def classify(front: str) -> int:
    files = {"image": ("star.png", STAR.read_bytes(), "image/png")}
    return httpx.post(f"{front}/classify", files=files, timeout=60).status_code


def keys(fleet) -> list[str]:
    return [e.split("//")[1] for e in fleet["engines"]]


@pytest.mark.slow
def test_calls_spread_over_every_engine(fleet) -> None:
    """Each engine's share of the calls is within 15 points of a third."""
    before = calls_per_engine(fleet["front"])
    load = wrk.run(fleet["front"], [STAR], 8, 5, threads=2)
    assert load["errors"] == 0 and load["socket_errors"] == 0, load
    after = calls_per_engine(fleet["front"])
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in keys(fleet)}
    assert sum(calls.values()) > 60, calls
    shares = {k: c / sum(calls.values()) for k, c in calls.items()}
    assert all(abs(share - 1 / 3) <= 0.15 for share in shares.values()), f"balanced by work: {shares}"


def engine_process(url: str) -> psutil.Process:
    host, port = url.split("//")[1].rsplit(":", 1)
    for p in psutil.process_iter(["cmdline"]):
        command = p.info["cmdline"] or []
        if "service.engine.server" in command and host in command and port in command:
            return p
    raise LookupError(url)


def engine_versions(engine: str) -> list[str]:
    index = httpx.post(f"{engine}/v2/repository/index", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return sorted(m["version"] for m in index.json() if m["name"] == "shapes-resnet10")


@pytest.mark.slow
def test_a_load_through_the_front_reaches_every_engine(fleet, tmp_path) -> None:
    """A second version loaded through the front is on both engines before the front routes to it; unloaded, it
    leaves both."""
    v2 = stored(fleet["env"]["BENTOML_HOME"], variant(INT8, tmp_path / "v2"))
    url = f"{fleet['front']}/v2/repository/models/shapes-resnet10"
    loaded = httpx.post(f"{url}/load", json={"parameters": {"version": v2, "default": False}}, timeout=120)
    assert loaded.status_code == 200, loaded.text
    assert all(v2 in engine_versions(e) for e in fleet["engines"]), "every engine has it"
    files = {"image": ("star.png", STAR.read_bytes(), "image/png")}
    answer = httpx.post(f"{fleet['front']}/classify", files=files, data={"model": f"shapes-resnet10:{v2}"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["version"] == v2, answer.text
    gone = httpx.post(f"{url}/unload", json={"parameters": {"version": v2}}, timeout=120)
    assert gone.status_code == 200, gone.text
    assert not any(v2 in engine_versions(e) for e in fleet["engines"]), "unloaded from every engine"


def desired(engine: str) -> dict:
    """The engine's set, without whether it is still as it started."""
    answer = httpx.get(f"{engine}/v2/repository/desired", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return {k: v for k, v in answer.json().items() if k != "fresh"}


def answered_by(front: str, key: str | None = None) -> str:
    files, headers = {"image": ("star.png", STAR.read_bytes(), "image/png")}, {"x-routing-key": key} if key else {}
    answer = httpx.post(f"{front}/classify", files=files, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["version"]


def settles(check, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.3)


@pytest.mark.slow
def test_a_change_through_one_front_reaches_the_other_and_a_restarted_engine(fleet, tmp_path) -> None:
    """A second front (its own state folder) on the same engines follows what the first one loads, promotes,
    canaries and rolls back, answering every request meanwhile; an engine restarted empty gets the set before its
    first call."""
    v1 = answered_by(fleet["front"])
    v2 = stored(fleet["env"]["BENTOML_HOME"], variant(INT8, tmp_path / "v2"))
    front_env = {"RESNET_MODELS": MODELS, "RESNET_ENGINE_URL": ",".join(fleet["engines"]), "RESNET_ENGINE_TOKEN": TOKEN}
    home = fleet["env"]["BENTOML_HOME"]
    with serve(home, fleet["root"] / "front2.log", **front_env) as front2:
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                statuses.append(classify(front2))

        checker = threading.Thread(target=hammer)
        checker.start()
        url = f"{fleet['front']}/v2/repository/models/shapes-resnet10"
        assert httpx.post(f"{url}/load", json={"parameters": {"version": v2}}, timeout=120).status_code == 200
        settles(lambda: answered_by(front2) == v2)
        assert all(desired(e)["defaults"]["shapes-resnet10"] == f"shapes-resnet10:{v2}" for e in fleet["engines"])
        before = calls_per_engine(front2)
        assert {answered_by(front2) for _ in range(30)} == {v2}
        after = calls_per_engine(front2)
        assert all(after.get(k, 0) > before.get(k, 0) for k in keys(fleet)), f"on every engine: {before} → {after}"
        canary = httpx.post(f"{url}/load", json={"parameters": {"version": v1, "traffic": 50}}, timeout=120)
        assert canary.status_code == 200, canary.text
        routing = [f"k{i}" for i in range(30)]
        settles(lambda: [answered_by(front2, k) for k in routing] == [answered_by(fleet["front"], k) for k in routing])
        assert {answered_by(front2, k) for k in routing} == {v1, v2}, "the same keys, the same versions"
        back = f"{front2}/v2/repository/models/shapes-resnet10/unload"
        assert httpx.post(back, json={"parameters": {"version": v2}}, timeout=120).status_code == 200
        settles(lambda: answered_by(fleet["front"]) == v1)
        stop.set()
        checker.join(60)
        assert set(statuses) == {200} and len(statuses) > 20, "no answer from a half-changed fleet is lost"

        assert httpx.post(f"{url}/load", json={"parameters": {"version": v2}}, timeout=120).status_code == 200
        settles(lambda: answered_by(front2) == v2)
        restarted = fleet["engines"][0]
        os.kill(engine_process(restarted).pid, signal.SIGKILL)
        env = {**fleet["env"], "RESNET_STATE_DIR": str(tmp_path / "fresh")}  # its set is gone: only RESNET_MODELS
        fleet["stack"].enter_context(start_engine(HOSTS[0], fleet["port"], env, tmp_path / "again.log"))  # it stays
        settles(lambda: desired(restarted) == desired(fleet["engines"][1]))
        takes_calls_again(fleet, restarted)
        assert httpx.post(back, json={"parameters": {"version": v2}}, timeout=120).status_code == 200


@pytest.mark.slow
def test_a_hung_engine_costs_no_answer_and_comes_back(fleet) -> None:
    """Suspended under load (as good as hung): its pending calls go to the other engine once the heartbeat ejects
    it; resumed, it takes calls again."""
    hung = engine_process(fleet["engines"][0])
    key = keys(fleet)[0]
    try:
        load = under_load(fleet["front"], 6, hung.suspend)
        assert load["errors"] == 0 and load["socket_errors"] == 0 and load["requests"] > 20, load
        metrics = httpx.get(f"{fleet['front']}/metrics", timeout=30).text
        assert f'resnet_engine_up{{engine="{key}"}} 0.0' in metrics
        assert re.search(rf'resnet_engine_ejections_total\{{engine="{re.escape(key)}"\}} [1-9]', metrics), metrics
    finally:
        hung.resume()
    deadline, before = time.monotonic() + 20, calls_per_engine(fleet["front"]).get(key, 0)
    while calls_per_engine(fleet["front"]).get(key, 0) == before and time.monotonic() < deadline:
        assert classify(fleet["front"]) == 200
    assert calls_per_engine(fleet["front"])[key] > before, "back in the fleet"


def takes_calls_again(fleet, engine: str) -> None:
    key, front = engine.split("//")[1], fleet["front"]
    before = calls_per_engine(front).get(key, 0)
    settles(lambda: classify(front) == 200 and calls_per_engine(front).get(key, 0) > before)


@pytest.mark.slow
def test_a_killed_engine_costs_no_answer_and_gets_work_once_restarted(fleet, tmp_path) -> None:
    """Killed under load: calls it held are sent once more to another engine, and the front stays ready; restarted,
    it takes calls again."""
    engine = fleet["engines"][1]
    killed = engine_process(engine)
    load = under_load(fleet["front"], 5, lambda: os.kill(killed.pid, signal.SIGKILL))
    assert load["errors"] == 0 and load["socket_errors"] == 0 and load["requests"] > 20, load
    assert httpx.get(f"{fleet['front']}/readyz", timeout=30).status_code == 200, "one engine with every model is enough"
    assert all(classify(fleet["front"]) == 200 for _ in range(5))
    fleet["stack"].enter_context(start_engine(HOSTS[1], fleet["port"], fleet["env"], tmp_path / "again.log"))
    takes_calls_again(fleet, engine)


@pytest.mark.slow
def test_after_a_partition_the_engines_converge_on_the_set_most_of_them_hold(fleet, tmp_path) -> None:
    """Two fronts that each reach one side (engines 1 and 2; engine 3) make different changes; the fixture's front,
    which reaches all three, sees them differ and gives the third engine the set the other two hold, and the
    front of the minority side follows it."""
    v1 = answered_by(fleet["front"])
    v2 = stored(fleet["env"]["BENTOML_HOME"], variant(INT8, tmp_path / "v2"))
    home, engines = fleet["env"]["BENTOML_HOME"], fleet["engines"]
    env = {"RESNET_MODELS": f"shapes-resnet10:{v1}", "RESNET_ENGINE_TOKEN": TOKEN}  # not v2, the latest now
    with (
        serve(home, tmp_path / "p.log", RESNET_ENGINE_URL=",".join(engines[:2]), **env) as p,
        serve(home, tmp_path / "q.log", RESNET_ENGINE_URL=engines[2], **env) as q,
    ):
        to_p, to_q = (f"{f}/v2/repository/models/shapes-resnet10/load" for f in (p, q))
        assert httpx.post(to_p, json={"parameters": {"version": v2}}, timeout=120).status_code == 200
        assert httpx.post(to_q, json={"parameters": {"version": v2, "default": False}}, timeout=120).status_code == 200
        assert desired(engines[0]) == desired(engines[1]) != desired(engines[2]), "each side changed its own"
        assert answered_by(q) == v1
        settles(lambda: desired(engines[2]) == desired(engines[0]), within_s=60)
        settles(lambda: answered_by(q) == v2 and answered_by(fleet["front"]) == v2)
        assert desired(engines[2])["defaults"]["shapes-resnet10"] == f"shapes-resnet10:{v2}"


@pytest.mark.slow
def test_with_every_engine_down_503_comes_at_once_and_the_front_is_not_ready(fleet) -> None:
    stopped = [engine_process(e) for e in fleet["engines"]]
    try:
        for process in stopped:
            process.suspend()
        settles(lambda: httpx.get(f"{fleet['front']}/readyz", timeout=30).status_code == 503)
        t = time.monotonic()
        assert classify(fleet["front"]) == 503
        assert time.monotonic() - t < 1, "at once"
    finally:
        for process in stopped:
            process.resume()
    settles(lambda: httpx.get(f"{fleet['front']}/readyz", timeout=30).status_code == 200)
    assert classify(fleet["front"]) == 200


def test_no_engine_up_is_a_fast_503() -> None:
    async def main() -> tuple[bool, float]:
        engine = RemoteEngine(("http://127.0.0.1:9",), "", 30, ("m",))
        try:
            t = time.monotonic()
            ready = await engine.ready()
            return ready, time.monotonic() - t
        finally:
            await engine.close()

    ready, seconds = asyncio.run(main())
    assert ready is False and seconds < 5


def test_a_repository_change_waits_a_few_heartbeats_for_an_engine_to_come_up() -> None:
    """Engines beside the fronts may come up just after a front worker's first heartbeat: a load then waits for one
    rather than answering 503 while another worker already says ready; with none, it gives up after STARTING_S."""

    async def main() -> tuple[list, float, list, float]:
        engine = RemoteEngine(("http://127.0.0.1:9",), "", 30, ())
        late = engine.members["late"] = Member("http://127.0.0.1:9", "", engine.timeout)
        asyncio.get_running_loop().call_later(0.3, late.verdict, True)
        t = time.monotonic()
        came = await engine._up_soon()
        came_s, t = time.monotonic() - t, time.monotonic()
        late.verdict(False)
        none = await engine._up_soon()
        await engine.close()
        return came, came_s, none, time.monotonic() - t

    came, came_s, none, none_s = asyncio.run(main())
    assert len(came) == 1 and 0.25 < came_s < STARTING_S, came_s
    assert none == [] and STARTING_S <= none_s < STARTING_S + 1, none_s


def test_series_of_an_engine_gone_a_while_leave_metrics() -> None:
    engine = RemoteEngine(("http://127.0.0.1:9",), "", 30, ())
    text = 'resnet_engine_up{engine="10.0.0.1:3000"} 0.0\nresnet_engine_up{engine="10.0.0.2:3000"} 1.0\nother 1.0\n'
    engine.gone = {"10.0.0.1:3000": time.monotonic() - GONE_S - 1, "10.0.0.2:3000": time.monotonic()}
    assert engine.keep_series(text) == 'resnet_engine_up{engine="10.0.0.2:3000"} 1.0\nother 1.0\n'
