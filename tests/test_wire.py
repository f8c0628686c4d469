"""No pickle is ever loaded: a pickle that would create a file, sent to every route of every socket the
service's processes listen on, with every content type, creates nothing and is answered 4xx."""

import pickle
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest

from loadtest.cpu import tree

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]
CONTENT_TYPES = [
    None,
    "application/vnd.bentoml+pickle",
    "application/octet-stream",
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/python-pickle",
    "multipart/form-data; boundary=x",
]
ROUTES = [
    "/",
    "/infer",
    "/providers",
    "/classify",
    "/classify_batch",
    "/explain",
    "/embed",
    "/models",
    "/ui",
    "/livez",
    "/readyz",
    "/metrics",
    "/v2",
    "/v2/models/shapes-resnet10/infer",
    "/v2/models/shapes-resnet10/versions/1/infer",
    "/v2/repository/index",
]


class Touch:
    """Loading this pickle opens (creates) ``path`` for writing."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def listening(pids: list[int]) -> tuple[set[tuple[str, int]], set[str]]:
    """(TCP (host, port), unix socket paths) that the process trees of ``pids`` listen on."""
    tcp, unix = set(), set()
    for pid in {p for root in pids for p in tree(root)}:
        proc = psutil.Process(pid)
        for c in getattr(proc, "net_connections", proc.connections)(kind="all"):  # psutil < 6 (kserve pins it)
            if c.family == socket.AF_UNIX and c.laddr:
                unix.add(c.laddr)
            elif c.status == psutil.CONN_LISTEN:
                tcp.add(("127.0.0.1" if c.laddr.ip in ("0.0.0.0", "::") else c.laddr.ip, c.laddr.port))
    return tcp, unix


def is_http(transport: httpx.HTTPTransport, base: str) -> bool:
    try:
        with httpx.Client(transport=transport, timeout=3) as c:
            c.get(f"{base}/livez")
        return True
    except httpx.HTTPError:
        return False


def probe(transport: httpx.HTTPTransport, base: str, payload: bytes, headers: dict) -> list[str]:
    """Every route and content type, as a raw body and as a form's file; what was not a 4xx."""
    wrong = []
    with httpx.Client(transport=transport, timeout=10, headers=headers) as c:
        for route in ROUTES:
            for kind in CONTENT_TYPES:
                r = c.post(f"{base}{route}", content=payload, headers={"content-type": kind} if kind else {})
                if not 400 <= r.status_code < 500:
                    wrong.append(f"{route} {kind}: {r.status_code}")
            r = c.post(f"{base}{route}", files={"image": ("x.pkl", payload, "application/vnd.bentoml+pickle")})
            if not 400 <= r.status_code < 500:
                wrong.append(f"{route} multipart: {r.status_code}")
    return wrong


def probe_every_socket(pids: list[int], tmp_path: Path, headers: dict | None = None) -> None:
    marker = tmp_path / "pickle-was-loaded"
    payload = pickle.dumps(Touch(marker))
    tcp, unix = listening(pids)
    assert tcp, "found the server's sockets"
    wrong, raw = [], []
    endpoints = [(httpx.HTTPTransport(), f"http://{h}:{p}", (h, p)) for h, p in sorted(tcp)]
    endpoints += [(httpx.HTTPTransport(uds=path), "http://local", path) for path in sorted(unix)]
    for transport, base, address in endpoints:
        if is_http(transport, base):
            wrong += [f"{address} {w}" for w in probe(transport, base, payload, headers or {})]
        else:  # not HTTP (BentoML's supervisor has two ZeroMQ control sockets on loopback): raw bytes
            raw.append(address)
            family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
            with socket.socket(family) as s:
                s.settimeout(2)
                s.connect(address)
                s.sendall(payload)
                time.sleep(0.2)
    time.sleep(0.5)
    assert not marker.exists(), "a pickle was loaded"
    assert not wrong, wrong
    print(f"probed {len(endpoints)} sockets ({len(raw)} not HTTP: {raw})")


def test_no_pickle_runs_on_the_served_service(url, tmp_path) -> None:
    probe_every_socket([url.pid], tmp_path)
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200, "still healthy"
