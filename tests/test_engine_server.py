"""The engine alone as an Open Inference Protocol tensor server: tritonclient calls it, a front on another
"host" classifies through it, and it refuses what it should, before reading what it need not."""

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from loadtest.server import serve as serve_command
from service import catalog
from service.engine.interface import OUTPUTS, Item
from service.engine.member import Member
from service.engine.remote import RemoteEngine
from service.engine.sessions import Sessions
from tests.conftest import ROOT, split_servers
from tests.server import DEFAULT
from tests.test_wire import probe_every_socket

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("engine")]
STAR = (ROOT / "docs" / "star.png").read_bytes()


def client(split) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(split["engine"].removeprefix("http://"))


def auth(split) -> dict:
    return {"Authorization": f"Bearer {split['token']}"}


def pixels(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_tritonclient_health_metadata_and_inference(split) -> None:
    c, headers = client(split), auth(split)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("shapes-resnet10", headers=headers)
    assert "binary_tensor_data" in c.get_server_metadata(headers=headers)["extensions"]
    meta = c.get_model_metadata("shapes-resnet10", headers=headers)
    assert meta["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUTS)
    x = pixels(3, 112, 176)
    entry = catalog.read("ref", DEFAULT)
    local = Sessions(entry, ("CPUExecutionProvider",), 1, False).run(x, list(OUTPUTS))
    for binary in (True, False):
        tensor = triton.InferInput("pixels", list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
        result = c.infer("shapes-resnet10", [tensor], outputs=wanted, headers=dict(headers))  # it adds to the dict
        sent_binary = [o for o in result.get_response()["outputs"] if "binary_data_size" in o.get("parameters", {})]
        assert len(sent_binary) == (3 if binary else 0), "binary tensors exactly when asked for"
        assert result.as_numpy("features").shape == (3, 128, 7, 11)
        for name in OUTPUTS:
            np.testing.assert_allclose(result.as_numpy(name), local[name], rtol=1e-4, atol=1e-4)


def test_every_call_but_health_needs_the_token(split) -> None:
    c = client(split)
    assert c.is_server_live(), "health is open, as probes need"
    with pytest.raises(InferenceServerException, match="token"):
        c.get_model_metadata("shapes-resnet10")
    wrong = {"Authorization": "Bearer not-it"}
    r = httpx.post(f"{split['engine']}/v2/models/shapes-resnet10/infer", content=b"{}", headers=wrong)
    assert r.status_code == 401 and "token" in r.json()["error"]


def test_no_token_refused_before_the_body_is_read(split) -> None:
    """A client announcing a gigabyte is answered 401 at once, without sending any of it."""
    host, port = split["engine"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /v2/models/shapes-resnet10/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 401")


def request(shape: list[int], datatype: str = "UINT8", data: list | None = None, **extra) -> bytes:
    tensor = {"name": "pixels", "datatype": datatype, "shape": shape, "data": data}
    if data is None:
        tensor = {**tensor, "data": [0] * int(np.prod(shape))}
    return json.dumps({"inputs": [tensor], **extra}).encode()


BINARY_PROMISE = json.dumps(
    {
        "inputs": [
            {"name": "pixels", "datatype": "UINT8", "shape": [1, 32, 32, 3], "parameters": {"binary_data_size": 3072}}
        ]
    }
).encode()
BAD = {
    "not json": (b"\x80\x04\x95 not json", None),
    "no inputs": (b'{"outputs": []}', None),
    "float pixels": (request([1, 32, 32, 3], "FP32"), None),
    "wrong data size": (request([1, 32, 32, 3], data=[1, 2]), None),
    "not an image tensor": (request([32, 32, 3]), None),
    "too small": (request([1, 2, 2, 3]), None),
    "unknown output": (request([1, 16, 16, 3], outputs=[{"name": "__class__"}]), None),
    "binary size beyond the body": (BINARY_PROMISE + bytes(10), str(len(BINARY_PROMISE))),
    "header length beyond the body": (b"{}", "99"),
    "no outputs": (request([1, 16, 16, 3], outputs=[]), None),
    "parameters not an object": (request([1, 16, 16, 3], parameters=[1]), None),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_are_4xx_json(split, case: str) -> None:
    body, length = BAD[case]
    headers = {**auth(split), **({"Inference-Header-Content-Length": length} if length else {})}
    r = httpx.post(f"{split['engine']}/v2/models/shapes-resnet10/infer", content=body, headers=headers)
    assert r.status_code == 400 and isinstance(r.json()["error"], str), r.text


def test_unknown_model_and_odd_tokens(split) -> None:
    assert httpx.get(f"{split['engine']}/v2/models/nope", headers=auth(split)).status_code == 404
    odd = {"Authorization": "Bearer ünïcödé".encode()}
    assert httpx.get(f"{split['engine']}/v2/models/shapes-resnet10", headers=odd).status_code == 401
    assert httpx.get(f"{split['engine']}/metrics").status_code == 401, "metrics are behind the token too"


def batches_run(split) -> float:
    """The engine's own count of onnxruntime calls, from its Prometheus metrics."""
    text = httpx.get(f"{split['engine']}/metrics", headers=auth(split)).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("resnet_batch_size_count"))


def test_front_classifies_through_the_remote_engine(split) -> None:
    before = batches_run(split)
    r = httpx.post(f"{split['front']}/classify", files={"image": ("star.png", STAR, "image/png")}, timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "star", r.text
    assert r.json()["ood"]["flagged"] is False, "the front scores the embedding the remote engine returns"
    explained = httpx.post(f"{split['front']}/explain", files={"image": ("s.png", STAR, "image/png")}, timeout=30)
    assert explained.status_code == 200 and explained.json()["class_label"] == "star"
    listing = httpx.get(f"{split['front']}/models").json()
    assert {m["provider"] for m in listing} == {"CPUExecutionProvider"}, "reported by the engine"
    assert batches_run(split) >= before + 2, "the engine ran both"
    engine = httpx.get(f"{split['engine']}/metrics", headers=auth(split)).text
    assert "resnet_engine_queued_images 0.0" in engine and "resnet_engine_batches_in_flight 0.0" in engine, "idle"


class CountingEngine(RemoteEngine):
    """The front's client of the real engine server, counting the requests it sends."""

    sent = 0

    async def _infer_group(self, *args):
        self.sent += 1
        return await super()._infer_group(*args)


def test_concurrent_callers_share_engine_requests_and_get_their_own_answers(split) -> None:
    """A hop costs CPU per request on both sides: the front's client merges what its callers send meanwhile."""
    images = pixels(16, 112, 144, seed=3)

    async def main() -> tuple[list, int]:
        engine = CountingEngine((split["engine"],), split["token"], 30, ("shapes-resnet10",), max_batch_size=32)
        try:
            calls = [engine.infer([Item("shapes-resnet10", image, ("logits", "embedding"))]) for image in images]
            return await asyncio.gather(*calls), engine.sent
        finally:
            await engine.close()

    answers, sent = asyncio.run(main())
    assert sent <= 2, f"16 concurrent callers, {sent} engine requests"
    want = Sessions(catalog.read("ref", DEFAULT), ("CPUExecutionProvider",), 1, False).run(images, ["logits"])
    for i, [result] in enumerate(answers):
        assert set(result.outputs) == {"logits", "embedding"} and result.batch_size > 1
        np.testing.assert_allclose(result.outputs["logits"], want["logits"][i], rtol=1e-4, atol=1e-4)


def test_engine_refuses_to_listen_beyond_loopback_without_a_token(split) -> None:
    env = {k: v for k, v in split["env"].items() if k != "RESNET_ENGINE_TOKEN"}
    command = [sys.executable, "-m", "service.engine.server", "--host", "0.0.0.0", "--port", "1"]
    run = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **env, "RESNET_ENGINE_TOKEN": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "RESNET_ENGINE_TOKEN" in run.stderr


def test_no_pickle_runs_on_engine_or_front(split, tmp_path) -> None:
    probe_every_socket([split["engine"].pid, split["front"].pid], tmp_path, auth(split))


def test_engine_gone_means_503_then_answers_again_when_it_is_back(tmp_path) -> None:
    with split_servers(tmp_path) as own:  # its own pair: it kills the engine
        engine, front = own["engine"], own["front"]
        image = {"image": ("star.png", STAR, "image/png")}
        assert httpx.post(f"{front}/classify", files=image, timeout=30).status_code == 200
        os.kill(engine.pid, signal.SIGKILL)
        os.waitpid(engine.pid, 0)
        t = time.monotonic()
        r = httpx.post(f"{front}/classify", files=image, timeout=30)
        assert r.status_code == 503 and r.json()["error"] == "overloaded" and r.headers["retry-after"] == "1"
        assert time.monotonic() - t < 5, "refused at once, not after a timeout"
        assert httpx.get(f"{front}/models", timeout=30).json()[0]["provider"] == "engine unreachable"
        assert not_ready(front), "the probes follow the engine: traffic goes elsewhere"
        port = int(engine.rsplit(":", 1)[1])
        with serve_command(
            "engine again",
            own["env"],
            tmp_path / "engine2.log",
            command=own["command"],
            ready_path="/v2/health/ready",
            port=port,
        ):
            assert ready(front)
            r = httpx.post(f"{front}/classify", files=image, timeout=30)
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "star"


def probes(front: str) -> set[int]:
    """The statuses of the front's two readiness probes (BentoML's and the protocol's)."""
    return {httpx.get(f"{front}{path}", timeout=30).status_code for path in ("/readyz", "/v2/health/ready")}


def ready(front: str, expected: bool = True, within_s: float = 10) -> bool:
    """Whether both probes come to say ``expected`` within ``within_s`` (the front's heartbeat is 0.5 s)."""
    deadline = time.monotonic() + within_s
    while (probes(front) == {200}) != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def not_ready(front: str) -> bool:
    return ready(front, expected=False) and all(code >= 400 for code in probes(front))


def test_an_engine_at_its_limit_is_a_503_at_the_front_never_a_500(tmp_path) -> None:
    with split_servers(tmp_path, engine_env={"RESNET_ENGINE_MAX_IN_FLIGHT": "2"}) as own:
        assert ready(own["front"])

        def one(_: int) -> httpx.Response:
            files = {"image": ("star.png", STAR, "image/png")}
            return httpx.post(f"{own['front']}/classify", files=files, timeout=60)

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(one, range(160)))
    statuses = collections.Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 503} and statuses[200], statuses
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "1" and a.json()["error"] == "overloaded" for a in refused)


def test_a_late_heartbeat_keeps_the_verdict_until_two_in_a_row_and_a_refused_one_is_down() -> None:
    """An engine busy on a CPU may answer its health route late: that is not a dead engine (every request
    would be refused at once); one silent twice in a row, or refusing connections, is."""

    async def main() -> None:
        held = []
        silent = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)  # accepts, never answers
        engine = Member(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}", "", aiohttp.ClientTimeout(30))
        try:
            engine.verdict(True)
            verdicts = []
            for _ in range(2):
                await engine.beat()
                verdicts.append(engine.up)
            assert verdicts == [True, False]
            engine.misses = 0
            await engine.beat()
            assert engine.up is False, "a late answer does not bring a down engine back"
        finally:
            await engine.close()
            silent.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = Member(f"http://127.0.0.1:{s.getsockname()[1]}", "", aiohttp.ClientTimeout(30))  # not listening
            closed.verdict(True)
            await closed.beat()
            assert closed.up is False
            await closed.close()

    asyncio.run(main())
