"""Dynamic batching as Triton does it: whenever a call may start, send everything queued, up to a cap.

Both ends of the protocol use it. The engine batches model calls, one at a time (the model is one
device). The front's client of a remote engine merges its concurrent requests into fewer engine
calls, a few in flight, since a hop costs CPU on both sides per call, not per image.

BentoML's adaptive dispatcher holds requests back to fill batches, for as long as the average of
past queue waits; after a burst that average feeds on itself, and a lone request waits many times
its model call. Here nothing waits on purpose: a batch is whatever arrived while the calls in flight
ran, and a request still queued after ``budget_s`` is refused at that moment, never run late.

Spare work (a rollout's shadow copies) yields to live work: it runs only when no live request waits, in time that
live work leaves idle, and is dropped, first (counted by its caller), whenever more than a batch of live images is
queued or live calls kept the engine busy for more than ``spare_busy`` of the last second (of each of its ``depth``
calls in flight). The gauge counts live work only: an autoscaler scales on it.
"""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from ..errors import EngineUnavailable


class QueueTimeout(EngineUnavailable):
    """A request waited longer than the queue budget: 503."""


class Dropped(EngineUnavailable):
    """Spare work refused or dropped for live work."""


Gauge = Callable[[int, int], None]  # (items queued, calls in flight), told whenever either changes


class Busy:
    """How much of the last ``window_s`` live calls were running (calls in flight together add up), kept as a
    running sum: asked on every live request, a sum over the window's calls grew with the rate of calls."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.spans: deque[tuple[float, float]] = deque()  # finished calls: (start, end), in the order they ended
        self.total = 0.0  # the spans' durations
        self.running: dict[object, float] = {}  # call → its start

    def start(self) -> object:
        token = object()
        self.running[token] = time.monotonic()
        return token

    def end(self, token: object | None) -> None:
        if token is not None:
            now = time.monotonic()
            start = self.running.pop(token)
            self.spans.append((start, now))
            self.total += now - start
            self._forget(now - self.window_s)

    def _forget(self, since: float) -> None:
        while self.spans and self.spans[0][1] < since:
            start, end = self.spans.popleft()
            self.total -= end - start
        if not self.spans:
            self.total = 0.0  # no drift from the additions and subtractions

    def share(self) -> float:
        now = time.monotonic()
        since = now - self.window_s
        self._forget(since)
        before = 0.0  # what the first spans to end ran before the window (with calls overlapping, an approximation)
        for start, _ in self.spans:
            if start >= since:
                break
            before += since - start
        running = sum(now - max(start, since) for start in self.running.values())
        return (self.total - before + running) / self.window_s


class Batcher:
    """``run`` takes a batch of items and returns each one's result or exception, in order."""

    def __init__(
        self,
        run: Callable[[list], Awaitable[list]],
        max_batch_size: int,
        budget_s: float,
        depth: int = 1,
        gauge: Gauge | None = None,
        spare_busy: float = 0.8,
    ) -> None:
        self.run, self.max_batch_size, self.budget_s, self.depth = run, max_batch_size, budget_s, depth
        self.gauge, self.spare_busy, self.busy = gauge, spare_busy, Busy()
        self.queue: deque[tuple[object, asyncio.Future, asyncio.TimerHandle]] = deque()
        self.spare: deque[tuple[object, asyncio.Future, asyncio.TimerHandle]] = deque()
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.calls: set[asyncio.Task] = set()  # in flight (kept referenced until done)

    async def submit(self, items: list, spare: bool = False) -> list:
        """Queue ``items`` and return their results, in order, once their batches have run; ``spare`` work is
        refused (Dropped) while live work fills the engine."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._serve())
        if spare and self._busy(len(items)):
            raise Dropped("the engine is busy with live work")
        futures = [loop.create_future() for _ in items]
        queue = self.spare if spare else self.queue
        for item, future in zip(items, futures, strict=True):
            queue.append((item, future, loop.call_later(self.budget_s, self._expire, future)))
        if not spare and self.spare and self._busy(0):
            self._drop_spare()
        self._report()
        self.wake.set()
        try:
            return await asyncio.gather(*futures)
        except BaseException:  # one part failed or the caller left: the rest is not wanted either
            for future in futures:
                future.cancel()
            raise

    def _busy(self, more: int) -> bool:
        """Whether live work fills a batch or the engine's time, or spare work would pass a batch more."""
        full = len(self.queue) > self.max_batch_size or len(self.spare) + more > self.max_batch_size
        return full or self.busy.share() / self.depth > self.spare_busy

    def _drop_spare(self) -> None:
        while self.spare:
            _, future, expiry = self.spare.popleft()
            expiry.cancel()
            if not future.done():
                future.set_exception(Dropped("dropped for live work"))

    def _expire(self, future: asyncio.Future) -> None:
        """Refuse a request the moment its queue budget runs out, not when the batch in progress ends."""
        if not future.done():
            future.set_exception(QueueTimeout(f"queued for more than {self.budget_s:g} s"))

    def _take(self) -> tuple[list[tuple[object, asyncio.Future]], bool]:
        """(the next batch, whether it is live): live requests, else spare work (dropped if live work keeps the
        engine busy), oldest first."""
        if (live := self._first(self.queue)) or not self.spare:
            return live, True
        if self._busy(0):
            self._drop_spare()
            return [], False
        return self._first(self.spare), False

    def _first(self, queue: deque) -> list[tuple[object, asyncio.Future]]:
        """Up to a batch from ``queue``, skipping requests refused or abandoned while they waited."""
        batch = []
        while queue and len(batch) < self.max_batch_size:
            item, future, expiry = queue.popleft()
            if future.done():
                continue
            expiry.cancel()  # running now: no longer refused for waiting
            batch.append((item, future))
        return batch

    async def _serve(self) -> None:
        slots = asyncio.Semaphore(self.depth)
        while True:
            await self.wake.wait()
            self.wake.clear()
            while True:
                await slots.acquire()
                if not (batch := self._take())[0]:
                    slots.release()
                    self._report()  # what expired while it waited is gone
                    break
                call = asyncio.get_running_loop().create_task(self._call(*batch))
                self.calls.add(call)
                self._report()
                call.add_done_callback(lambda done: (self.calls.discard(done), slots.release(), self._report()))

    def _report(self) -> None:
        if self.gauge is not None:
            self.gauge(len(self.queue), len(self.calls))

    async def _call(self, batch: list[tuple[object, asyncio.Future]], live: bool) -> None:
        started = self.busy.start() if live else None
        try:
            results = await self.run([item for item, _ in batch])
        except Exception as exc:  # the whole call failed: every request in it fails
            results = [exc] * len(batch)
        finally:
            self.busy.end(started)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
