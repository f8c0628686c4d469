"""Start `bentoml serve` on a free local port, wait until /readyz answers, stop it afterwards."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


class Server(str):
    """The base URL of a running server, with the process id of its root (for /proc measurements) and the
    address of its gRPC endpoint."""

    pid: int
    grpc: str


def child(*args: str, env: dict | None = None) -> None:
    """``python -m ARGS`` in the project's root, failing loudly."""
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, env={**os.environ, **(env or {})})


def model_home(home: Path, *model_folders: Path) -> Path:
    """A fresh BentoML home at ``home`` holding just these exported models."""
    shutil.rmtree(home, ignore_errors=True)
    child("export.store", *map(str, model_folders), env={"BENTOML_HOME": str(home)})
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


READY_STREAK = 4  # answers in a row: each probe is a new connection, taken by any worker, and each says for itself


@contextmanager
def serve(
    target: str,
    env: dict,
    log: Path,
    cwd: Path = ROOT,
    ready_timeout: float = 240,
    command=None,
    ready_path: str = "/readyz",
    port: int | None = None,
    host: str = "127.0.0.1",
):
    """Yield the base URL of a ready server for ``target`` (a service import path or a Bento tag),
    or for ``command`` (an argument list; ``--port N`` is appended) when one is given, listening on ``host``."""
    port = port or free_port()
    cmd = [*(command or [sys.executable, "-m", "bentoml", "serve", target]), "--port", str(port)]
    env = {"RESNET_GRPC_PORT": str(free_port()), **env}  # servers side by side: a gRPC port each
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = Server(f"http://{host}:{port}")
    url.pid, url.grpc = proc.pid, f"127.0.0.1:{env['RESNET_GRPC_PORT']}"
    try:
        deadline, streak = time.monotonic() + ready_timeout, 0
        while streak < READY_STREAK:
            if proc.poll() is not None:
                raise RuntimeError(f"{target} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not ready in {ready_timeout}s:\n{log.read_text()[-4000:]}")
            try:
                streak = streak + 1 if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200 else 0
            except httpx.HTTPError:
                streak = 0
            time.sleep(0.1 if streak else 0.5)
        yield url
    finally:
        with suppress(ProcessLookupError):  # a test may have killed it already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
