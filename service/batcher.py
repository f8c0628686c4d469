"""Dynamic batching as Triton does it: whenever the model is free, run everything queued, up to a cap.

BentoML's adaptive dispatcher holds requests back to fill batches, for as long as the average of
past queue waits; after a burst that average feeds on itself (on an H200 a lone request then waited
~120 ms for a 1.5 ms model call). Here nothing waits on purpose: a batch is whatever arrived while
the previous one ran, and a request still queued after ``budget_s`` is refused, never run late.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable


class QueueTimeout(Exception):
    """A request waited longer than the queue budget: the caller answers 503."""


class Batcher:
    def __init__(self, run: Callable[[list], list], max_batch_size: int, budget_s: float) -> None:
        self.run, self.max_batch_size, self.budget_s = run, max_batch_size, budget_s
        self.queue: deque[tuple[float, object, asyncio.Future]] = deque()
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None

    async def submit(self, items: list) -> list:
        """Queue ``items`` and return their results, in order, once their batches have run."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._serve())
        now, futures = time.monotonic(), []
        for item in items:
            futures.append(loop.create_future())
            self.queue.append((now, item, futures[-1]))
        self.wake.set()
        return await asyncio.gather(*futures)

    def _take(self) -> list[tuple[object, asyncio.Future]]:
        """The next batch: oldest first, skipping callers that left and refusing requests past the budget."""
        late, batch = time.monotonic() - self.budget_s, []
        while self.queue and len(batch) < self.max_batch_size:
            queued, item, future = self.queue.popleft()
            if future.done():  # the caller was cancelled
                continue
            if queued < late:
                future.set_exception(QueueTimeout(f"queued for more than {self.budget_s:g} s"))
                continue
            batch.append((item, future))
        return batch

    async def _serve(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while batch := self._take():
                try:
                    results = await asyncio.to_thread(self.run, [item for item, _ in batch])
                except Exception as exc:  # the whole call failed: every request in it fails
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
