"""The front's client for an engine elsewhere: the Open Inference Protocol with binary tensors, over HTTP.

Anything that speaks the protocol can be the engine: ``python -m service.engine.server``, or Triton
serving the same ONNX (``pixels`` in; ``logits``, ``embedding``, ``features`` out). An engine at its
limit, restarting or gone is EngineUnavailable (503 with Retry-After at the front), never a 500. A
heartbeat on the protocol's health route keeps the verdict current: while the engine is down every
request is refused at once, and readiness says so, instead of waiting on a socket nobody accepts on.
"""

import asyncio
import contextlib
import json

import aiohttp
import numpy as np

from ..errors import ApiError, EngineUnavailable
from ..protocol import codec
from ..protocol.paths import READY, change_path, model_path
from .batcher import Batcher
from .interface import Item, Result, group

BUSY = (429, 502, 503, 504)  # the engine (or a proxy before it) cannot take the call now
PROBE = aiohttp.ClientTimeout(total=1)  # a heartbeat answered later than this is a miss
MISSES = 2  # misses in a row: an engine that silent is down (hung or stopped); a busy one misses one now and then
HEARTBEAT_S = 0.5
CALLS_IN_FLIGHT = 2  # per front worker: the engine has the next batch queued while it runs this one


class RemoteEngine:
    """``infer`` merges the items of concurrent callers, as the engine does, into a few calls in flight, each
    sending one request per (model, shape, outputs) group at once.

    ``url`` is ``http://host:port`` or ``unix:///path/to.sock`` (the engine BentoML runs beside the fronts).
    """

    def __init__(
        self, url: str, token: str, timeout_s: float, models: tuple[str, ...], max_batch_size: int = 32
    ) -> None:
        self.models, self.timeout = models, aiohttp.ClientTimeout(total=timeout_s)  # store tags, name:version
        self.batcher = Batcher(self._send, max_batch_size, timeout_s, CALLS_IN_FLIGHT)
        self.socket = url.removeprefix("unix://") if url.startswith("unix://") else None
        self.url = "http://engine" if self.socket else url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self.up: bool | None = None  # the last health verdict; None before the first
        self.misses = 0  # heartbeats in a row without an answer in time
        self._heartbeat: asyncio.Task | None = None
        self.versioned: bool | None = None  # whether the engine serves the store's versions (this project's does)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made on first use, inside the server's event loop
            connector = aiohttp.UnixConnector(path=self.socket) if self.socket else None
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers, connector=connector)
        return self._session

    async def _request(self, method: str, path: str, **kw) -> tuple[int, str | None, bytes]:
        """(status, the inference header's length if given, body)."""
        async with self.session.request(method, f"{self.url}{path}", **kw) as r:
            return r.status, r.headers.get(codec.HEADER), await r.read()

    async def _alive(self) -> bool:
        try:
            alive = (await self._request("GET", READY, timeout=PROBE))[0] == 200
        except TimeoutError:
            return self._late()
        except aiohttp.ClientError:
            alive = False
        self.misses = 0
        return alive

    def _late(self) -> bool:
        """A health question not answered in time: the verdict stands until MISSES in a row (a CPU-busy engine
        answers late now and then; a hung or stopped one never does)."""
        self.misses += 1
        if self.misses >= MISSES:
            self.up = False
        return self.up is not False

    async def _beat(self) -> None:
        while True:
            self.up = await self._alive()
            await asyncio.sleep(HEARTBEAT_S)

    async def _is_up(self) -> bool:
        """The heartbeat's verdict (started on first use, in the server's event loop); the first one awaited."""
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        if self.up is None:
            self.up = await self._alive()
        return self.up

    async def _call(self, method: str, path: str, retry: bool = True, **kw) -> tuple[int, str | None, bytes]:
        """A request to an engine that is up; EngineUnavailable at once while it is down."""
        if not await self._is_up():
            raise EngineUnavailable("the engine is restarting or unreachable")
        try:
            return await self._request(method, path, **kw)
        except aiohttp.ServerDisconnectedError:
            if retry and await self._alive():  # a pooled connection the engine had just closed: once more
                return await self._call(method, path, False, **kw)
            self.up = False
            raise EngineUnavailable("the engine went away") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            self.up = False
            raise EngineUnavailable(f"engine unreachable: {exc}") from None
        except TimeoutError:
            raise EngineUnavailable("engine did not answer in time") from None

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._session is not None:
            await self._session.close()

    async def _infer_group(self, model: str, pixels: np.ndarray, outputs: tuple[str, ...]) -> list[Result]:
        wanted = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
        body, length = codec.encode({"outputs": wanted}, "inputs", {"pixels": pixels}, {"pixels"})
        headers = {codec.HEADER: str(length), "Content-Type": "application/octet-stream"}
        status, length, data = await self._call("POST", f"{await self._path(model)}/infer", data=body, headers=headers)
        if status in BUSY:
            raise EngineUnavailable(f"the engine answered {status}")
        if status != 200:
            raise RuntimeError(f"engine answered {status}: {data[:300]!r}")
        try:
            reply, tensors = codec.decode(data, length, "outputs")
        except codec.ProtocolError as exc:
            raise RuntimeError(f"the engine's answer is malformed: {exc.detail}") from None
        params = reply.get("parameters") or {}
        ms, size = float(params.get("model_ms", 0.0)), int(params.get("batch_size", len(pixels)))
        return [Result({o: tensors[o][i] for o in outputs}, ms, size) for i in range(len(pixels))]

    async def infer(self, items: list[Item]) -> list[Result]:
        return await self.batcher.submit(items)

    async def _send(self, items: list[Item]) -> list[Result | BaseException]:
        """Each item's result, or the failure of its group's request."""
        groups = group(items, lambda item: (item.model, item.pixels.shape, item.outputs))
        calls = [
            self._infer_group(model, np.stack([items[i].pixels for i in idx]), outputs)
            for (model, _, outputs), idx in groups.items()
        ]
        answered = await asyncio.gather(*calls, return_exceptions=True)
        by_item: dict[int, Result | BaseException] = {}
        for idx, results in zip(groups.values(), answered, strict=True):
            by_item.update(zip(idx, results if isinstance(results, list) else [results] * len(idx), strict=True))
        return [by_item[i] for i in range(len(items))]

    async def ready(self) -> bool:
        """Up by the heartbeat, and every model ready on the engine, asked with the token (a wrong token is not
        ready); not answered in time is not ready, and a miss."""
        if not await self._is_up():
            return False
        try:
            paths = [await self._path(m) for m in self.models]
        except EngineUnavailable:
            return False
        asked = [self._request("GET", f"{path}/ready", timeout=PROBE) for path in paths]
        try:
            statuses = [status for status, _, _ in await asyncio.gather(*asked)]
        except TimeoutError:
            self._late()
            return False
        except aiohttp.ClientError:
            return False
        self.misses = 0
        return all(s == 200 for s in statuses)

    async def providers(self) -> dict[str, str]:
        """Each model's execution provider, from its protocol metadata (``remote`` where the engine does not say)."""
        found = {}
        for tag in self.models:
            try:
                status, _, data = await self._call("GET", await self._path(tag))
            except EngineUnavailable:
                status, data = 0, b""
            if status == 200:
                found[tag] = (json.loads(data).get("parameters") or {}).get("provider", "remote")
            else:
                found[tag] = "engine unreachable"
        return found

    async def load(self, tag: str, default: bool) -> None:
        """The engine's repository API loads ``tag`` (warm when it answers), or says why it cannot."""
        name, _, version = tag.partition(":")
        body = {"parameters": {"version": version, "default": default}}
        status, _, data = await self._call("POST", change_path(name, "load"), json=body)
        if status in BUSY:
            raise EngineUnavailable(f"the engine answered {status}")
        if status != 200:
            raise ApiError(400, "load_failed", _error(data))

    async def apply(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """Wait (up to the request timeout) until the engine serves every new tag; tell it to unload those dropped
        (an engine beside the fronts has read the same desired set and answers 404). The tags served."""
        deadline = asyncio.get_running_loop().time() + self.timeout.total
        waiting = [t for t in tags if t not in self.models]
        while waiting and asyncio.get_running_loop().time() < deadline:
            waiting = [t for t in waiting if not await self._serves(t)]
            await asyncio.sleep(0.1 if waiting else 0)
        for tag in set(self.models) - set(tags):
            name, _, version = tag.partition(":")
            body = {"parameters": {"version": version}}
            with contextlib.suppress(EngineUnavailable):
                await self._call("POST", change_path(name, "unload"), json=body)
        self.models = tuple(t for t in tags if t not in waiting)
        return self.models

    async def _serves(self, tag: str) -> bool:
        try:
            return (await self._call("GET", f"{await self._path(tag)}/ready"))[0] == 200
        except EngineUnavailable:
            return False

    async def _path(self, tag: str) -> str:
        """The protocol's path of ``name:version``; of the name alone (its default version) on a name alone, or on
        another server than this project's engine (Triton numbers its versions itself)."""
        if self.versioned is None:
            status, _, data = await self._call("GET", "/v2")
            self.versioned = status == 200 and json.loads(data).get("name", "").startswith("resnet-serve")
        name, _, version = tag.partition(":")
        return model_path(name, version if self.versioned else None)


def _error(data: bytes) -> str:
    """The protocol's ``{"error": message}``, or the start of whatever else came."""
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return repr(data[:300])
