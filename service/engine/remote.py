"""The front's client for engines elsewhere: the Open Inference Protocol with binary tensors, over HTTP, to one
engine or a fleet of them (RESNET_ENGINE_URL, a comma-separated list; a host name means each of its addresses).

Anything that speaks the protocol can be an engine: ``python -m service.engine.server``, or Triton serving the
same ONNX. Each front worker keeps a heartbeat verdict per engine and sends each call to the engine with the
fewest images in flight from it. A call whose engine failed before answering (refused, reset, 502/504, or judged
down while the call waited) goes once more to another engine within the call's deadline; a busy answer
(429/503) goes elsewhere only where another engine has room; retries are capped at about 10 % of calls, as
gRPC's retry throttling caps them. What cannot be answered is EngineUnavailable (503 with Retry-After at the
front), never a 500. A shadow copy goes to one engine, once.

The fleet's set of models lives on this project's engines (``GET /v2/repository/desired``): ``agreed`` tells the
front's keeper the set they all hold (service/repository.py follows it), an engine that starts fresh is given it, and
engines that keep differing (after a partition) are given the set most of them hold.
"""

import asyncio
import contextlib
import json
import logging
import random
import time

import aiohttp
import numpy as np

from ..errors import ApiError, EngineUnavailable
from ..metrics import left_out
from ..protocol import codec
from ..protocol.paths import DESIRED, change_path, model_path
from ..rollout import Plan
from . import addresses
from .batcher import Batcher
from .interface import SPARE, Item, Result, group
from .member import PROBE, Member

log = logging.getLogger("resnet.front")

BUSY, BROKEN = (429, 503), (502, 504)  # at its limit; lost by a proxy before it
HEARTBEAT_S, RESOLVE_S = 0.5, 5.0
STARTING_S = 2.0  # a repository change waits this long for an engine to be up (a call is refused at once)
FULL_S = 1.0  # after a 429/503, no retry is sent to that engine for this long
CALLS_IN_FLIGHT = 2  # per front worker: the engine has the next batch queued while it runs this one
RETRY_TOKENS, RETRY_RATIO = 10.0, 0.1  # gRPC's retry throttling: a retry spends a token, a call earns 0.1


class Failed(Exception):
    """The call failed before its engine answered: another engine may take it."""


class RemoteEngine:
    """``infer`` merges the items of concurrent callers into a few calls in flight, each sending one request per
    (model, shape, outputs) group, each request to the least busy engine that serves."""

    def __init__(
        self,
        urls: tuple[str, ...],
        token: str,
        timeout_s: float,
        models: tuple[str, ...],
        max_batch_size: int = 32,
        spare_busy: float = 0.8,
        mend_s: float = 60.0,
    ) -> None:
        self.urls, self.token, self.models = urls, token, models  # store tags, name:version
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.batcher = Batcher(self._send, max_batch_size, timeout_s, CALLS_IN_FLIGHT, spare_busy=spare_busy)
        self.members: dict[str, Member] = {}
        self.gone: dict[str, float] = {}  # engine key → when it left
        self.tokens = RETRY_TOKENS
        self.shared: dict = {}  # the front's set (repository.Desired.shared), which service/worker.py keeps current
        self.mend_s, self.split = mend_s, None  # the engines' sets as last seen to differ, and since when
        self._watching: asyncio.Task | None = None
        self._started: asyncio.Future | None = None

    async def _start(self) -> None:
        """Engines found and judged once (in the server's event loop, on first use), then watched; every caller
        meanwhile waits for that first verdict."""
        if self._watching is None or self._watching.done():
            self._started = asyncio.get_running_loop().create_future()
            self._watching = asyncio.get_running_loop().create_task(self._watch())
        await asyncio.shield(self._started)

    async def _watch(self) -> None:
        try:
            await self._resolve()
            await self._beat()
        except Exception as exc:
            self._started.set_exception(exc)
            raise
        self._started.set_result(None)
        resolved = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                if time.monotonic() - resolved >= RESOLVE_S:
                    await self._resolve()
                    resolved = time.monotonic()
                await self._beat()
            except Exception:  # a verdict never frozen by one bad round
                log.exception("front: watching the engines")

    async def _resolve(self) -> None:
        """Members for the addresses the configured names have now: new ones join, vanished ones leave."""
        loop = asyncio.get_running_loop()
        found = [u for url in self.urls for u in await loop.run_in_executor(None, addresses.resolve, url)]
        for url in found:
            if url not in self.members:
                self.members[url] = Member(url, self.token, self.timeout)
        for url in set(self.members) - set(found):
            member = self.members.pop(url)
            member.verdict(False)
            self.gone[member.key] = time.monotonic()
            await member.close()

    async def _beat(self) -> None:
        """Every member's heartbeat; one that comes (back) up gets the front's models before it takes a call."""
        members = list(self.members.values())
        await asyncio.gather(*(m.beat() for m in members))
        await asyncio.gather(*(self._sync(m) for m in members if m.up and not m.synced))

    async def _sync(self, member: Member) -> None:
        """A member that (re)joins serves this front's versions before it takes a call. An engine of this project whose
        set is fresh (as its RESNET_MODELS made it: new, or restarted with its set gone) is given the set the other
        engines agree on (versions, defaults, rollouts) with this front's versions added; one that has a set keeps it
        (a front that was itself away may be the one behind), and is given the versions it lacks; another protocol
        server (Triton) must serve each."""
        try:
            if await self._fresh(member) and (joined := self._joined(await self._agreement(without=member))):
                await self._give(member, joined)  # (a client that no front worker keeps has no set to give)
            for tag in [t for t in self.models if not await self._serves(member, t)]:
                await self._load(member, tag, default=False, plan=None)
        except ApiError as exc:  # EngineUnavailable too: tried again at the next heartbeat
            log.warning("engine %s cannot take this front's models yet: %s", member.key, exc.detail)
            return
        member.synced = True

    async def _desired_of(self, member: Member) -> dict | None:
        """The member's set as it shows it, ``fresh`` included ({} from another protocol server, None when it
        answers none); EngineUnavailable when it cannot be asked."""
        if not await self._versioned(member):
            return {}
        status, _, data = await self._call(member, "GET", DESIRED, timeout=PROBE)
        return json.loads(data) if status == 200 else None

    async def _fresh(self, member: Member) -> bool:
        """Whether the member is this project's engine with a set as its RESNET_MODELS made it."""
        return (await self._desired_of(member) or {}).get("fresh") is True

    async def _give(self, member: Member, shared: dict) -> None:
        status, _, data = await self._call(member, "PUT", DESIRED, json=shared)
        if status != 200:
            raise ApiError(502, "engine_refused", f"it answered {status}: {_error(data)}")

    def _joined(self, fleet: dict | None) -> dict:
        """The fleet's set with this front's versions (and the defaults of names it alone has) added: no version
        this front routes to is ever missing from an engine."""
        if fleet is None:
            return self.shared
        own = self.shared
        tags = fleet["tags"] + [t for t in own["tags"] if t not in fleet["tags"]]
        defaults = {n: t for n, t in own["defaults"].items() if n not in fleet["defaults"]} | fleet["defaults"]
        return fleet | {"tags": tags, "defaults": defaults}

    async def agreed(self) -> dict | None:
        """The set every engine of this project that is up holds, if they all hold the same one (a change through any
        front reaches them all); None while they differ or one cannot say. Engines that keep differing are mended."""
        await self._start()
        held = await self._held()
        if (same := _same(held)) is not None:
            self.split = None
            return same
        if held:
            await self._mend(held)
        return None

    async def _agreement(self, without: Member | None = None) -> dict | None:
        return _same(await self._held(without))

    async def _held(self, without: Member | None = None) -> dict[Member, dict] | None:
        """Each up member's set (of this project's engines), or None while one cannot say."""
        members = [m for m in self._up() if m is not without]
        sets = await asyncio.gather(*(self._set_of(m) for m in members))
        return None if None in sets else {m: s for m, s in zip(members, sets, strict=True) if s != {}}

    async def _mend(self, held: dict[Member, dict]) -> None:
        """Engines that have differed the same way for longer than a change takes (a partition healed with a change
        made on each side, a load that failed on some) are given the set most of them hold (``majority``)."""
        seen = sorted((m.key, json.dumps(s, sort_keys=True)) for m, s in held.items())
        if self.split is None or self.split[0] != seen:
            self.split = (seen, time.monotonic())
            return
        if time.monotonic() - self.split[1] < self.mend_s:
            return
        chosen = majority(list(held.values()))
        for member in [m for m, shared in held.items() if shared != chosen]:
            log.warning("engine %s held a set most engines lack for %.0f s: given theirs", member.key, self.mend_s)
            with contextlib.suppress(ApiError):  # tried again at the next round
                await self._give(member, chosen)
        self.split = None

    async def _set_of(self, member: Member) -> dict | None:
        """The member's set, without ``fresh`` ({} from another protocol server, None when it cannot say now)."""
        try:
            found = await self._desired_of(member)
        except EngineUnavailable:  # gone since the heartbeat
            return None
        return found and {k: v for k, v in found.items() if k != "fresh"}

    def _up(self) -> list[Member]:
        return [m for m in self.members.values() if m.up]

    def _pick(self, tried: set[str], busy_ok: bool = True) -> Member | None:
        """The serving member with the fewest images in flight from this worker, not yet tried (ties at random)."""
        free = [m for m in self.members.values() if m.serving and m.key not in tried and (busy_ok or not m.full)]
        return min(free, key=lambda m: (m.in_flight, random.random())) if free else None

    def _earn(self) -> None:
        """A call made: a tenth of a retry earned, up to the bucket's size."""
        self.tokens = min(RETRY_TOKENS, round(self.tokens + RETRY_RATIO, 6))

    def _may_retry(self) -> bool:
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    async def _attempt(self, member: Member, path: str, body: bytes, headers: dict, images: int, spare: bool) -> tuple:
        """One request to ``member``, abandoned if the heartbeat ejects it meanwhile; Failed before an answer. A
        shadow copy refused (``spare``: dropped for live work) is no sign of an engine at its limit."""
        member.in_flight += images
        failed = True
        try:
            status, length, data = await self._unless_down(member, path, body, headers)
            failed = status in BROKEN or (status in BUSY and not spare)
        finally:
            member.counted(images, failed)
        if status in BUSY and not spare:
            member.full_until = time.monotonic() + FULL_S
        if status in BROKEN:
            raise Failed(f"engine {member.key}: a proxy answered {status}")
        return status, length, data

    async def _unless_down(self, member: Member, path: str, body: bytes, headers: dict) -> tuple:
        """The member's answer; Failed if it was ejected while the call waited (not if the caller left)."""
        try:
            try:
                return await member.post(path, body, headers)
            except aiohttp.ServerDisconnectedError:  # a pooled connection the engine had just closed: once more
                return await member.post(path, body, headers)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            member.verdict(False)
            raise Failed(f"engine {member.key} unreachable: {exc}") from None
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling() or member.up is not False:
                raise
            raise Failed(f"engine {member.key} judged down while the call waited") from None

    async def _infer_group(
        self, model: str, pixels: np.ndarray, outputs: tuple[str, ...], shadow: bool
    ) -> list[Result]:
        wanted = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
        head = {"outputs": wanted} | ({"parameters": {"priority": SPARE}} if shadow else {})
        body, length = codec.encode(head, "inputs", {"pixels": pixels}, {"pixels"})
        headers = {codec.HEADER: str(length), "Content-Type": "application/octet-stream"}
        if not shadow:  # a shadow copy is never retried: it neither earns nor spends the retry budget
            self._earn()
        tried: set[str] = set()
        try:
            async with asyncio.timeout(self.timeout.total):  # the call's own deadline, retry included
                return await self._first_answer(model, body, headers, outputs, len(pixels), tried, shadow)
        except TimeoutError:
            raise EngineUnavailable("no engine answered in time") from None

    async def _first_answer(
        self, model: str, body: bytes, headers: dict, outputs: tuple[str, ...], n: int, tried: set[str], spare: bool
    ) -> list[Result]:
        """Engine after engine (the least busy first) until one answers, within the retry budget (a shadow copy: the
        first engine only)."""
        while True:
            member = self._pick(tried, busy_ok=not tried)
            if member is None:
                raise EngineUnavailable("no engine is up" if not tried else "no other engine can take it")
            tried.add(member.key)
            try:
                path = f"{await self._path(member, model)}/infer"
                status, length, data = await self._attempt(member, path, body, headers, n, spare)
            except Failed as exc:
                if spare or not self._may_retry():
                    raise EngineUnavailable(str(exc)) from None
                continue
            if status in BUSY and not spare and self._pick(tried, busy_ok=False) is not None and self._may_retry():
                continue
            return self._results(status, length, data, outputs, n)

    @staticmethod
    def _results(status: int, length: str | None, data: bytes, outputs: tuple[str, ...], n: int) -> list[Result]:
        if status in BUSY:
            raise EngineUnavailable(f"the engine answered {status}")
        if status == 404:  # a version unloaded through another front, retired before this one followed
            raise ApiError(404, "unknown_model", _error(data))
        if status != 200:
            raise RuntimeError(f"engine answered {status}: {data[:300]!r}")
        try:
            reply, tensors = codec.decode(data, length, "outputs")
        except codec.ProtocolError as exc:
            raise RuntimeError(f"the engine's answer is malformed: {exc.detail}") from None
        params = reply.get("parameters") or {}
        ms, size = float(params.get("model_ms", 0.0)), int(params.get("batch_size", n))
        return [Result({o: tensors[o][i] for o in outputs}, ms, size) for i in range(n)]

    async def infer(self, items: list[Item]) -> list[Result]:
        await self._start()
        return await self.batcher.submit(items, spare=items[0].shadow)

    async def _send(self, items: list[Item]) -> list[Result | BaseException]:
        """Each item's result, or the failure of its group's request."""
        groups = group(items, lambda item: (item.model, item.pixels.shape, item.outputs, item.shadow))
        calls = [
            self._infer_group(model, np.stack([items[i].pixels for i in idx]), outputs, shadow)
            for (model, _, outputs, shadow), idx in groups.items()
        ]
        answered = await asyncio.gather(*calls, return_exceptions=True)
        by_item: dict[int, Result | BaseException] = {}
        for idx, results in zip(groups.values(), answered, strict=True):
            by_item.update(zip(idx, results if isinstance(results, list) else [results] * len(idx), strict=True))
        return [by_item[i] for i in range(len(items))]

    async def ready(self) -> bool:
        """Ready while at least one engine is up, holds every model and says each is ready (asked with the token: a
        wrong token is not ready)."""
        await self._start()
        for member in [m for m in self.members.values() if m.serving]:
            if all([await self._serves(member, tag) for tag in self.models]):
                return True
        return False

    async def providers(self) -> dict[str, str]:
        """Each model's execution provider, from an engine's protocol metadata (``remote`` where it does not say)."""
        await self._start()
        member = self._pick(set())
        found = {}
        for tag in self.models:
            status, data = 0, b""
            if member is not None:
                with contextlib.suppress(EngineUnavailable):
                    status, _, data = await self._call(member, "GET", await self._path(member, tag))
            found[tag] = "engine unreachable"
            if status == 200:
                found[tag] = (json.loads(data).get("parameters") or {}).get("provider", "remote")
        return found

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        for member in self.members.values():
            await member.close()

    async def _call(self, member: Member, method: str, path: str, **kw) -> tuple[int, str | None, bytes]:
        """A request to one member; EngineUnavailable when it cannot be made or answered in time."""
        try:
            return await member.request(method, path, **kw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"engine {member.key}: {exc or 'no answer in time'}") from None

    async def _load(self, member: Member, tag: str, default: bool, plan: Plan | None) -> None:
        name, _, version = tag.partition(":")
        body = {"parameters": {"version": version, **({"default": default} if plan is None else plan.parameters())}}
        status, _, data = await self._call(member, "POST", change_path(name, "load"), json=body)
        if status in BUSY:
            raise EngineUnavailable(f"engine {member.key} answered {status}")
        if status != 200:
            raise ApiError(400, "load_failed", _error(data))

    async def load(self, tag: str, default: bool, plan: Plan | None = None) -> None:
        """Every engine that is up loads ``tag`` (warm when it answers) as the front does (the default, or a canary
        or shadow by ``plan``), or the reason one cannot."""
        await self._start()
        up = await self._up_soon()
        if not up:
            raise EngineUnavailable("no engine is up")
        await asyncio.gather(*(self._load(m, tag, default, plan) for m in up))

    async def _up_soon(self) -> list[Member]:
        """The members up, waiting a few heartbeats for one: engines that BentoML starts beside the fronts may come up
        just after a front worker's first heartbeat, while another worker already answers ready."""
        deadline = time.monotonic() + STARTING_S
        while not (up := self._up()) and time.monotonic() < deadline:
            await asyncio.sleep(HEARTBEAT_S / 5)
        return up

    async def apply(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """Wait (up to the request timeout) until every engine that is up serves each new tag; tell them to unload
        those dropped (an engine beside the fronts has read the same desired set and answers 404). The tags served."""
        await self._start()
        deadline = asyncio.get_running_loop().time() + self.timeout.total
        waiting = [t for t in tags if t not in self.models]
        while waiting and asyncio.get_running_loop().time() < deadline:
            up = self._up()
            waiting = [t for t in waiting if not up or not all([await self._serves(m, t) for m in up])]
            await asyncio.sleep(0.1 if waiting else 0)
        for tag in set(self.models) - set(tags):
            await asyncio.gather(*(self._unload(m, tag) for m in self._up()))
        self.models = tuple(t for t in tags if t not in waiting)
        return self.models

    async def _unload(self, member: Member, tag: str) -> None:
        """Unloaded, or gone already (404). An engine that cannot be asked, or refuses, keeps the version, and its set
        no longer agrees with the others' (fronts elsewhere follow no change until it does): logged."""
        name, _, version = tag.partition(":")
        body = {"parameters": {"version": version}}
        try:
            status, _, data = await self._call(member, "POST", change_path(name, "unload"), json=body)
        except EngineUnavailable as exc:
            log.warning("engine %s did not unload %s: %s", member.key, tag, exc.detail)
            return
        if status not in (200, 404):
            log.warning("engine %s did not unload %s: it answered %d: %s", member.key, tag, status, _error(data))

    async def _serves(self, member: Member, tag: str) -> bool:
        try:
            path = await self._path(member, tag)
            return (await self._call(member, "GET", f"{path}/ready", timeout=PROBE))[0] == 200
        except EngineUnavailable:
            return False

    async def _versioned(self, member: Member) -> bool:
        """Whether the member is this project's engine (it serves the store's versions), asked once."""
        if member.versioned is None:
            status, _, data = await self._call(member, "GET", "/v2")
            member.versioned = status == 200 and json.loads(data).get("name", "").startswith("resnet-serve")
        return member.versioned

    async def _path(self, member: Member, tag: str) -> str:
        """The protocol's path of ``name:version``; of the name alone (its default version) on a name alone, or on
        another server than this project's engine (Triton numbers its versions itself)."""
        name, _, version = tag.partition(":")
        return model_path(name, version if await self._versioned(member) else None)

    def keep_series(self, text: str) -> str:
        """/metrics without the series of engines gone a while (metrics.left_out)."""
        here = {m.key for m in self.members.values()}
        return left_out(text, {(f'engine="{k}"',): left for k, left in self.gone.items() if k not in here})


def _same(held: dict[Member, dict] | None) -> dict | None:
    """The one set every member holds, if they hold one."""
    sets = list((held or {}).values())
    return sets[0] if sets and all(s == sets[0] for s in sets) else None


def majority(sets: list[dict]) -> dict:
    """The set most engines hold; a tie goes to the set with fewer versions, then to the first in JSON order, so
    that every front picks the same one."""
    texts = [json.dumps(s, sort_keys=True) for s in sets]
    return json.loads(min(set(texts), key=lambda t: (-texts.count(t), len(json.loads(t)["tags"]), t)))


def _error(data: bytes) -> str:
    """The protocol's ``{"error": message}``, or the start of whatever else came."""
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return repr(data[:300])
