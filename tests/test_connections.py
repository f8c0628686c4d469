"""Connections that cost a file descriptor and nothing else, against a real server: silent and trickling
clients cut off at the header deadline, header limits, keep-alive expiry, a real 504, and file
descriptors running out."""

import io
import socket
import sys
import time

import httpx
import pytest
from PIL import Image

from loadtest.server import serve as serve_command
from tests.server import DEFAULT, import_models, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slow")]
STAR = (DEFAULT.parents[1] / "docs" / "star.png").read_bytes()
HEADER_TIMEOUT_S = 2


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def huge_png() -> bytes:
    """36 Mpx (under the 40 Mpx limit) that compresses small but takes a while to decode and resize."""
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((6000, 6000)).convert("RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    home = tmp_path_factory.mktemp("connections")
    import_models(home, DEFAULT)
    env = {
        "RESNET_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "RESNET_TIMEOUT_S": "0.1",
        "RESNET_MAX_BODY_BYTES": str(200 * 2**20),
    }
    with serve(home, home / "server.log", **env) as url:
        yield url


def test_silent_and_trickling_connections_get_408_at_the_header_deadline(url) -> None:
    silent, trickle = connect(url), connect(url)
    t = time.monotonic()
    trickle.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # a header byte every half second: never complete
        time.sleep(0.5)
        trickle.sendall(b"X")
    got = [answer(silent), answer(trickle)]
    took = time.monotonic() - t
    assert all(g.startswith(b"HTTP/1.1 408") and b"header_timeout" in g for g in got), got
    assert HEADER_TIMEOUT_S - 0.5 < took < HEADER_TIMEOUT_S + 3, took


def test_idle_keep_alive_connection_is_closed_after_uvicorns_timeout(url) -> None:
    sock = connect(url)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    length = int(
        next(v for k, v in (h.split(b": ", 1) for h in head.split(b"\r\n")[1:-2]) if k.lower() == b"content-length")
    )
    body = b"".join(sock.recv(1) for _ in range(length))
    assert head.startswith(b"HTTP/1.1 200") and body
    t = time.monotonic()
    assert answer(sock) == b"", "closed without another word"
    assert 4 < time.monotonic() - t < 9, "uvicorn's 5 s keep-alive timeout"


@pytest.mark.parametrize(
    "headers", [{f"x-h{i}": "v" for i in range(150)}, {"x-big": "v" * 20_000}], ids=["count", "size"]
)
def test_header_limits_answer_431_json(url, headers: dict) -> None:
    r = httpx.post(f"{url}/classify", headers=headers, files={"image": ("s.png", STAR, "image/png")}, timeout=15)
    assert r.status_code == 431 and r.json()["error"] == "headers_too_large", r.text


def test_header_bytes_beyond_the_limit_are_cut_off_before_the_headers_end(url) -> None:
    sock = connect(url)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nx-big: " + b"v" * 32 * 1024)  # no end of headers, ever
    got = answer(sock)
    assert got.startswith(b"HTTP/1.1 431") and b"headers_too_large" in got, got[:200]


def test_the_request_timeout_is_a_504_json_and_costs_nothing_else(url) -> None:
    r = httpx.post(f"{url}/classify", files={"image": ("big.png", huge_png(), "image/png")}, timeout=60)
    assert r.status_code == 504 and r.json()["error"] == "timeout" and "0.1 s" in r.json()["detail"], r.text
    assert httpx.get(f"{url}/readyz", timeout=15).status_code == 200


def test_when_file_descriptors_run_out_new_connections_are_refused_and_existing_ones_served(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    target, deadline_s = "service.service:Classifier", 5
    command = ["prlimit", "--nofile=256:256", "--", sys.executable, "-m", "bentoml", "serve", target]
    env = {"BENTOML_HOME": str(tmp_path), "RESNET_HEADER_TIMEOUT_S": str(deadline_s)}
    with serve_command(target, env, tmp_path / "server.log", command=command) as url, httpx.Client() as existing:

        def classify(client) -> int:
            return client.post(f"{url}/classify", files={"image": ("s.png", STAR, "image/png")}).status_code

        assert classify(existing) == 200
        t = time.monotonic()
        hoard = [connect(url) for _ in range(400)]  # silent, and more than the worker has descriptors for
        assert classify(existing) == 200, "an open connection is still served"
        with pytest.raises(httpx.TransportError):
            classify(httpx)
        assert time.monotonic() - t < deadline_s, "refused at once, not left hanging"
        time.sleep(max(0.0, deadline_s + 1 - (time.monotonic() - t)))
        assert classify(httpx) == 200, "the header deadline freed the hoarded descriptors"
        for sock in hoard:
            sock.close()
