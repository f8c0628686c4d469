"""One engine of a front's fleet, as one front worker sees it: its connection, the heartbeat's verdict, the images
it has in flight from this worker, and its figures in /metrics."""

import asyncio
import time

import aiohttp

from ..metrics import ENGINE_CALLS, ENGINE_EJECTIONS, ENGINE_FAILURES, ENGINE_UP
from ..protocol import codec
from ..protocol.paths import READY

PROBE = aiohttp.ClientTimeout(total=1)  # a heartbeat answered later than this is a miss
MISSES = 2  # misses in a row: an engine that silent is down (hung or stopped); a busy one misses one now and then


class Member:
    """``url`` is ``http://host:port`` or ``unix:///path`` (the engines BentoML runs beside the fronts)."""

    def __init__(self, url: str, token: str, timeout: aiohttp.ClientTimeout) -> None:
        self.socket = url.removeprefix("unix://") if url.startswith("unix://") else None
        self.base = "http://engine" if self.socket else url  # what requests name (every socket's is the same)
        self.key = self.socket or url.split("//", 1)[1]  # one engine's name, and its metrics' label
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout, self._session = timeout, None
        self.up: bool | None = None  # the heartbeat's last verdict; None before the first
        self.synced = False  # holds the front's models (pushed when it joins or comes back)
        self.misses, self.in_flight, self.full_until = 0, 0, 0.0
        self.calls: set[asyncio.Task] = set()  # waiting on it: cancelled when it is judged down, sent elsewhere
        self.versioned: bool | None = None  # whether it serves the store's versions (this project's engine does)
        self.called, self.failed = ENGINE_CALLS.labels(engine=self.key), ENGINE_FAILURES.labels(engine=self.key)
        self.ejected, self.up_gauge = ENGINE_EJECTIONS.labels(engine=self.key), ENGINE_UP.labels(engine=self.key)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made on first use, inside the server's event loop
            connector = aiohttp.UnixConnector(path=self.socket) if self.socket else None
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers, connector=connector)
        return self._session

    @property
    def serving(self) -> bool:
        return bool(self.up) and self.synced

    @property
    def full(self) -> bool:
        return time.monotonic() < self.full_until

    async def request(self, method: str, path: str, **kw) -> tuple[int, str | None, bytes]:
        """(status, the inference header's length if given, body); aiohttp's errors as they come."""
        async with self.session.request(method, f"{self.base}{path}", **kw) as r:
            return r.status, r.headers.get(codec.HEADER), await r.read()

    def counted(self, images: int, failed: bool) -> None:
        self.called.inc()
        if failed:
            self.failed.inc()
        self.in_flight -= images

    async def post(self, path: str, body: bytes, headers: dict) -> tuple[int, str | None, bytes]:
        """A call that ends in asyncio.CancelledError, with the verdict down, if the member is ejected meanwhile."""
        call = asyncio.ensure_future(self.request("POST", path, data=body, headers=headers))
        self.calls.add(call)
        try:
            return await call
        finally:
            self.calls.discard(call)

    def verdict(self, up: bool) -> None:
        """The heartbeat's (or a failed call's) verdict: a member going down is ejected, and what waits on it leaves."""
        if not up and self.up is not False:
            self.ejected.inc()
            for call in self.calls:
                call.cancel()
            self.synced = False  # it may come back without the models loaded since
        self.up = up
        self.up_gauge.set(int(up))

    async def beat(self) -> None:
        """One heartbeat: ready in time is up, refused is down, late MISSES times in a row is down."""
        try:
            alive = (await self.request("GET", READY, timeout=PROBE))[0] == 200
        except TimeoutError:
            self.misses += 1
            if self.misses >= MISSES:
                self.verdict(False)
            return
        except aiohttp.ClientError:
            alive = False
        self.misses = 0
        self.verdict(alive)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
