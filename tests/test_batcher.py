"""Batching at both ends of the protocol: batches form from what queued during the calls in flight; GPU sessions
keep one size."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.engine import batcher, sessions
from service.engine.batcher import Batcher, Busy, Dropped, QueueTimeout
from service.engine.interface import OUTPUTS
from service.engine.sessions import Cuda, Sessions, batch_sizes
from tests.test_default_model import entry


class Recorder:
    """A model call that blocks until released and records the batches it was given."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.gate.wait(5)
        if self.fail_on in items:
            raise RuntimeError("model call failed")
        return [i * 10 for i in items]


def threaded(model: Recorder):
    """The model called in a thread of its own, as the engine calls onnxruntime."""
    pool = ThreadPoolExecutor(2)

    async def run(items: list[int]) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(pool, model, items)

    return run


async def until(predicate) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def busy_batcher(budget_s: float) -> tuple[Recorder, Batcher, asyncio.Task]:
    """A batcher whose model is running request 1 and blocked until ``model.gate`` is set."""
    model = Recorder()
    batcher = Batcher(threaded(model), max_batch_size=8, budget_s=budget_s)
    busy = asyncio.create_task(batcher.submit([1]))
    await until(lambda: model.batches == [[1]])  # dispatched alone: nothing waits to fill a batch
    return model, batcher, busy


def test_lone_request_runs_at_once_and_queued_ones_form_one_batch():
    async def main():
        model, batcher, first = await busy_batcher(budget_s=10)
        rest = [asyncio.create_task(batcher.submit([i])) for i in range(2, 12)]
        pair = asyncio.create_task(batcher.submit([20, 21]))
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(first, *rest, pair)
        assert results == [[10], *[[i * 10] for i in range(2, 12)], [200, 210]]
        assert model.batches == [[1], list(range(2, 10)), [10, 11, 20, 21]]  # capped at 8, oldest first

    asyncio.run(main())


def test_requests_past_the_budget_are_refused_without_running():
    async def main():
        model, batcher, busy = await busy_batcher(budget_s=0.05)
        late = asyncio.create_task(batcher.submit([2]))
        await asyncio.sleep(0.2)  # longer than the budget, while the model is busy
        assert late.done(), "refused when the budget ran out, not when the running batch ends"
        with pytest.raises(QueueTimeout):
            await late
        model.gate.set()
        assert await busy == [10]
        assert model.batches == [[1]]
        assert await batcher.submit([3]) == [30]  # and the next one is served

    asyncio.run(main())


def test_a_failed_call_fails_its_batch_only():
    async def main():
        model = Recorder(fail_on=2)
        model.gate.set()
        batcher = Batcher(threaded(model), max_batch_size=8, budget_s=10)
        with pytest.raises(RuntimeError, match="model call failed"):
            await batcher.submit([2])
        assert await batcher.submit([3]) == [30]

    asyncio.run(main())


def test_spare_work_runs_after_live_work_and_is_dropped_first():
    """A shadow's copies wait while live requests do, never join a live batch, and go when live work fills a batch."""

    async def main():
        model, batcher, busy = await busy_batcher(budget_s=10)
        shadow = asyncio.create_task(batcher.submit([100, 101], spare=True))
        live = [asyncio.create_task(batcher.submit([i])) for i in (2, 3)]
        await asyncio.sleep(0.05)
        model.gate.set()
        assert await asyncio.gather(busy, *live, shadow) == [[10], [20], [30], [1000, 1010]]
        assert model.batches == [[1], [2, 3], [100, 101]], "live first, spare in a batch of its own"

        model.gate.clear()
        busy = asyncio.create_task(batcher.submit([1]))
        await until(lambda: len(model.batches) == 4)
        shadow = asyncio.create_task(batcher.submit([100], spare=True))
        live = [asyncio.create_task(batcher.submit([i])) for i in range(2, 11)]  # past a batch of 8
        await asyncio.sleep(0.05)
        assert shadow.done() and isinstance(shadow.exception(), Dropped), "dropped once live work fills a batch"
        with pytest.raises(Dropped):
            await batcher.submit([100], spare=True)  # and refused while it does
        model.gate.set()
        await asyncio.gather(busy, *live)
        assert all(100 not in batch for batch in model.batches[3:])

    asyncio.run(main())


def test_the_busy_share_equals_the_sum_over_the_window(monkeypatch):
    """Busy keeps a running sum; it must equal the plain sum of each call's time within the last window."""
    clock = [0.0]
    monkeypatch.setattr(batcher.time, "monotonic", lambda: clock[0])
    busy, rng, spans = Busy(window_s=1.0), np.random.default_rng(0), []
    for _ in range(3000):
        token, start = busy.start(), clock[0]
        clock[0] += rng.uniform(0, 0.02)  # a call
        if rng.random() < 0.5:  # asked while a call runs
            want = sum(e - max(s, clock[0] - 1) for s, e in [*spans, (start, clock[0])] if e > clock[0] - 1)
            assert busy.share() == pytest.approx(want, abs=1e-9)
        busy.end(token)
        spans.append((start, clock[0]))
        clock[0] += rng.uniform(0, 0.01)  # idle
        want = sum(e - max(s, clock[0] - 1) for s, e in spans if e > clock[0] - 1)
        assert busy.share() == pytest.approx(want, abs=1e-9)
    clock[0] += 2
    assert busy.share() == 0 and busy.total == 0


def test_spare_work_is_dropped_while_live_calls_keep_the_engine_busy():
    async def main():
        async def slow(items: list[int]) -> list[int]:
            await asyncio.sleep(0.1)
            return items

        batcher = Batcher(slow, max_batch_size=8, budget_s=10, spare_busy=0.8)
        assert await batcher.submit([1], spare=True) == [1], "an idle engine runs spare work"
        for i in range(9):  # 0.9 s of the last second busy with live calls
            await batcher.submit([i])
        with pytest.raises(Dropped):
            await batcher.submit([2], spare=True)
        await asyncio.sleep(0.5)
        assert await batcher.submit([3], spare=True) == [3], "and once live work leaves room, runs it again"

    asyncio.run(main())


def test_a_cancelled_caller_is_skipped():
    async def main():
        model, batcher, busy = await busy_batcher(budget_s=10)
        gone = asyncio.create_task(batcher.submit([2]))
        kept = asyncio.create_task(batcher.submit([3]))
        await asyncio.sleep(0.01)
        gone.cancel()
        model.gate.set()
        assert await busy == [10] and await kept == [30]
        assert model.batches == [[1], [3]]

    asyncio.run(main())


def test_with_two_calls_in_flight_the_third_batch_is_what_queued_meanwhile():
    """The remote engine's client keeps a few calls in flight: a second starts at once, a third waits for a slot."""

    async def main():
        model = Recorder()
        batcher = Batcher(threaded(model), max_batch_size=8, budget_s=10, depth=2)
        first = asyncio.create_task(batcher.submit([1]))
        await until(lambda: model.batches == [[1]])
        second = asyncio.create_task(batcher.submit([2]))
        await until(lambda: model.batches == [[1], [2]])  # not held back behind the first
        rest = [asyncio.create_task(batcher.submit([i])) for i in range(3, 6)]
        await asyncio.sleep(0.05)
        assert model.batches == [[1], [2]], "both slots busy: the rest waits"
        model.gate.set()
        assert await asyncio.gather(first, second, *rest) == [[10], [20], [30], [40], [50]]
        assert model.batches == [[1], [2], [3, 4, 5]]

    asyncio.run(main())


class Spy:
    """A session stand-in that records the batch sizes it is given."""

    def __init__(self, session) -> None:
        self.session, self.batches = session, set()

    def run(self, names, feed):
        self.batches.add(len(feed["pixels"]))
        return self.session.run(names, feed)


def test_fixed_batch_sessions_pad_to_a_power_of_two_and_answer_the_same():
    """The GPU path (one session per batch size), forced on CPU: padding changes nothing but the session used."""
    assert batch_sizes(1) == [1] and batch_sizes(32) == [1, 2, 4, 8, 16, 32] and batch_sizes(20)[-1] == 32
    plain = Sessions(entry("shapes-resnet10"), ("CPUExecutionProvider",), 2, False)
    fixed = Sessions(entry("shapes-resnet10"), ("CPUExecutionProvider",), 2, False, max_batch=8, fixed_batches=True)
    assert list(fixed.sessions) == [1, 2, 4, 8] and plain.sessions == {}
    fixed.sessions = {n: Spy(s) for n, s in fixed.sessions.items()}
    rng = np.random.default_rng(0)
    for n in (1, 3, 5, 8):
        x = rng.integers(0, 256, (n, 112, 144, 3), dtype=np.uint8)
        want, got = plain.run(x, list(OUTPUTS)), fixed.run(x, list(OUTPUTS))
        for name in ("logits", "embedding", "features"):
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)
    assert {n: s.batches for n, s in fixed.sessions.items()} == {1: {1}, 2: set(), 4: {4}, 8: {8}}


class ShapeSpy:
    """A session stand-in that records the input shapes it is run at."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, names, feed):
        self.shapes.append(feed["pixels"].shape)
        return [np.zeros(len(feed["pixels"])) for _ in names]


def test_fixed_batch_sessions_are_warmed_at_the_crop_square_and_batch_1_at_every_bucket():
    """On the GPU path (forced on CPU): every shape's kernels are met once at batch 1, and every session ends on the
    crop square, so that `crop` traffic never re-plans; one session on CPU runs every bucket at batch 1."""
    fixed = Sessions(entry("shapes-resnet10"), ("CPUExecutionProvider",), 1, False, max_batch=4, fixed_batches=True)
    # the default model's policies: crop 112², full with shorter side 112 and the longer side 112…336 by 32
    buckets = (
        {(112, 112)} | {(112, long) for long in range(112, 337, 32)} | {(long, 112) for long in range(144, 337, 32)}
    )
    assert len(buckets) == 15 and set(fixed.meta.preprocessing.buckets()) == buckets
    spies = {n: ShapeSpy() for n in fixed.sessions}
    fixed.sessions, fixed.session = spies, spies[1]
    assert fixed.warmup() == 15 + 2
    assert sorted(spies[1].shapes) == sorted((1, h, w, 3) for h, w in buckets), "batch 1: every bucket"
    assert {n: spy.shapes[-1] for n, spy in spies.items()} == {n: (n, 112, 112, 3) for n in (1, 2, 4)}, "crop last"
    assert spies[2].shapes == [(2, 112, 112, 3)] and spies[4].shapes == [(4, 112, 112, 3)]
    plain = Sessions(entry("shapes-resnet10"), ("CPUExecutionProvider",), 1, False)
    assert plain.warm_shapes() == [(1, h, w) for h, w in sorted(buckets)], "CPU: one session, batch 1, every bucket"


class OutOfMemory(ShapeSpy):
    """A session whose arena is full at batch 4, as onnxruntime's CUDA provider says it."""

    def run(self, names, feed):
        if len(feed["pixels"]) == 4:
            raise RuntimeError("BFCArena::AllocateRawInternal Available memory of 1 is smaller than requested bytes")
        return super().run(names, feed)


def test_a_failed_warm_up_names_the_model_the_call_and_the_gpu_memory_shares():
    """An engine that cannot warm a model says which model, batch and shape failed, and with what budget."""
    budget = Cuda(mem_limit=64 * 2**20)
    fixed = Sessions(entry("shapes-resnet10"), ("CPUExecutionProvider",), 1, False, 4, fixed_batches=True, cuda=budget)
    spies = {n: OutOfMemory() for n in fixed.sessions}
    fixed.sessions, fixed.session = spies, spies[1]
    with pytest.raises(RuntimeError) as failed:
        fixed.warmup()
    message = str(failed.value)
    assert message.startswith(f"model {fixed.entry.tag}: the warm-up call at batch 4, 112×112 failed: BFCArena")
    assert message.endswith("RESNET_GPU_MEM_LIMIT_MB: batch 1: 18, batch 2: 20, batch 4: 24)"), message


def test_the_gpu_memory_budget_is_shared_by_a_models_fixed_batch_sessions(monkeypatch):
    """RESNET_GPU_MEM_LIMIT_MB bounds what the sessions × arenas of an engine may take (CUDA options, pinned)."""
    budget = Cuda(device=1, mem_limit=64 * 2**20)
    assert budget.options() == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "use_tf32": "0",
        "arena_extend_strategy": "kSameAsRequested",
        "gpu_mem_limit": str(64 * 2**20),
    }
    assert "gpu_mem_limit" not in Cuda().options(), "0: onnxruntime's default"
    assert Cuda(nhwc=True).options()["prefer_nhwc"] == "1" and "prefer_nhwc" not in Cuda().options()
    made = []
    real = sessions.make_session
    monkeypatch.setattr(sessions, "make_session", lambda *args: made.append(args[-1]) or real(*args))
    Sessions(
        entry("shapes-resnet10"), ("CPUExecutionProvider",), 1, False, max_batch=8, fixed_batches=True, cuda=budget
    )
    limits = [c.mem_limit for c in made]
    assert limits == [64 * 2**20 * (n + 8) // 47 for n in (1, 2, 4, 8)], "batch sizes 1, 2, 4, 8: by n + 8"
    assert sum(limits) <= 64 * 2**20 and limits == sorted(limits), "within the budget, larger batches more"
