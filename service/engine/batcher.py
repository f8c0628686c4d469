"""Dynamic batching as Triton does it: whenever the model is free, run everything queued, up to a cap.

BentoML's adaptive dispatcher holds requests back to fill batches, for as long as the average of
past queue waits; after a burst that average feeds on itself, and a lone request waits many times
its model call. Here nothing waits on purpose: a batch is whatever arrived while
the previous one ran, and a request still queued after ``budget_s`` is refused at that moment,
never run late.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import EngineUnavailable


class QueueTimeout(EngineUnavailable):
    """A request waited longer than the queue budget: 503."""


class Batcher:
    def __init__(self, run: Callable[[list], list], max_batch_size: int, budget_s: float) -> None:
        self.run, self.max_batch_size, self.budget_s = run, max_batch_size, budget_s
        self.queue: deque[tuple[object, asyncio.Future, asyncio.TimerHandle]] = deque()
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None
        # its own thread: batches never queue behind image decoding in the loop's default executor
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="batcher")

    async def submit(self, items: list) -> list:
        """Queue ``items`` and return their results, in order, once their batches have run."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._serve())
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures, strict=True):
            self.queue.append((item, future, loop.call_later(self.budget_s, self._expire, future)))
        self.wake.set()
        try:
            return await asyncio.gather(*futures)
        except BaseException:  # one part failed or the caller left: the rest is not wanted either
            for future in futures:
                future.cancel()
            raise

    def _expire(self, future: asyncio.Future) -> None:
        """Refuse a request the moment its queue budget runs out, not when the batch in progress ends."""
        if not future.done():
            future.set_exception(QueueTimeout(f"queued for more than {self.budget_s:g} s"))

    def _take(self) -> list[tuple[object, asyncio.Future]]:
        """The next batch, oldest first, skipping requests refused or abandoned while they waited."""
        batch = []
        while self.queue and len(batch) < self.max_batch_size:
            item, future, expiry = self.queue.popleft()
            if future.done():
                continue
            expiry.cancel()  # running now: no longer refused for waiting
            batch.append((item, future))
        return batch

    async def _serve(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while batch := self._take():
                try:
                    loop = asyncio.get_running_loop()
                    results = await loop.run_in_executor(self.pool, self.run, [item for item, _ in batch])
                except Exception as exc:  # the whole call failed: every request in it fails
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
