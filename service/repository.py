"""The desired set of models: the versions loaded and each name's default, in a file that every front worker and
engine process on the host watches, so that a load or unload reaches them all and outlives any one's restart.

The file is ``models.json`` in RESNET_STATE_DIR (``bentoml serve`` makes a fresh folder per deployment unless one
is set; set it to a volume to keep the set across deployments). Changes are read, modified and written under an
exclusive lock and replaced atomically; readers poll its signature.
"""

import asyncio
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import bentoml

from .errors import ApiError
from .rollout import Plan, Split

log = logging.getLogger("resnet.repository")
FILE = "models.json"
SHARED = ("defaults", "traffic", "shadows", "previous")


def split(tag: str) -> tuple[str, str]:
    name, _, version = tag.partition(":")
    return name, version


@dataclass(frozen=True)
class Desired:
    """Loaded tags (``name:version``) in load order, each name's default tag (unversioned routes reach it), and the
    model of routes that name none (the first of RESNET_MODELS); and the rollouts: canary tags with their percent of
    the name's unversioned requests, shadow tags with the share copied to them, and for each promoted tag the
    default it replaced (a roll back returns to it)."""

    tags: tuple[str, ...]
    defaults: dict[str, str] = field(default_factory=dict)
    main: str = ""
    generation: int = 0  # one more on every change
    traffic: dict[str, float] = field(default_factory=dict)
    shadows: dict[str, float] = field(default_factory=dict)
    previous: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, tags: list[str]) -> "Desired":
        """The first tag of each name is its default, as RESNET_MODELS lists them."""
        defaults: dict[str, str] = {}
        for tag in tags:
            defaults.setdefault(split(tag)[0], tag)
        return cls(tuple(dict.fromkeys(tags)), defaults, split(tags[0])[0])

    def versions(self, name: str) -> list[str]:
        return [split(t)[1] for t in self.tags if split(t)[0] == name]

    def loaded(self, tag: str, default: bool) -> "Desired":
        """With ``tag`` loaded; as the default (promoted: its canary or shadow ends, and the default it replaces is
        remembered) when ``default`` says so or it is the name's first version."""
        name, old = split(tag)[0], self.defaults.get(split(tag)[0])
        tags = tuple(dict.fromkeys((*self.tags, tag)))
        if not (default or old is None):
            return replace(self, tags=tags)
        previous = self.previous | ({tag: old} if old not in (None, tag) else {})
        return replace(self, tags=tags, defaults=self.defaults | {name: tag}, previous=previous, **self._ended(tag))

    def routed(self, tag: str, plan: Plan) -> "Desired":
        """With ``tag`` loaded beside the default as a canary or a shadow (or no longer one, at 0); ApiError 400 for
        a rollout of the default itself, or canaries of one name past 100 %."""
        name = split(tag)[0]
        if name not in self.defaults:
            raise ApiError(400, "bad_rollout", f"{name} is not loaded: a canary or shadow shares its default's traffic")
        if self.defaults[name] == tag:
            raise ApiError(400, "bad_rollout", f"{tag} is the default of {name}: a canary or shadow is another version")
        ended = self._ended(tag)
        if plan.traffic is not None:
            others = sum(p for t, p in ended["traffic"].items() if split(t)[0] == name)
            if others + plan.traffic > 100:
                detail = f"the canaries of {name} would take {others + plan.traffic:g} % of its traffic; at most 100"
                raise ApiError(400, "bad_rollout", detail)
            # a canary keeps its place among the others (its bucket range starts where it did)
            grown = {t: plan.traffic if t == tag else p for t, p in (self.traffic | {tag: 0}).items()}
            ended["traffic"] = {t: p for t, p in grown.items() if p and (t == tag or t in ended["traffic"])}
        if plan.shadow_rate:
            ended["shadows"] |= {tag: plan.shadow_rate}
        return replace(self, tags=tuple(dict.fromkeys((*self.tags, tag))), **ended)

    def _ended(self, *tags: str) -> dict[str, dict]:
        """The rollout tables without ``tags``' canaries and shadows."""
        return {
            "traffic": {t: p for t, p in self.traffic.items() if t not in tags},
            "shadows": {t: r for t, r in self.shadows.items() if t not in tags},
        }

    def unloaded(self, name: str, version: str | None) -> "Desired":
        """Without that version of ``name`` (every version when None); ValueError for what cannot go. A removed
        default passes back to the default it replaced when that is still loaded (a roll back), else to the version
        loaded last."""
        gone = [t for t in self.tags if split(t)[0] == name and version in (None, split(t)[1])]
        if not gone:
            raise LookupError(f"{name} version {version} is not loaded" if version else f"{name} is not loaded")
        tags = tuple(t for t in self.tags if t not in gone)
        left = [t for t in tags if split(t)[0] == name]
        if name == self.main and not left:
            raise ValueError(f"{name} is the default model: load another version before unloading its last")
        defaults = {n: t for n, t in self.defaults.items() if n != name}
        if left:
            defaults[name] = self.defaults[name] if self.defaults[name] in left else self._before(name, left)
        previous = {t: self._before(t, tags) for t in self.previous if t not in gone}
        previous = {t: p for t, p in previous.items() if p is not None}
        return replace(self, tags=tags, defaults=defaults, previous=previous, **self._ended(*gone, *defaults.values()))

    def _before(self, of: str, left: list[str] | tuple[str, ...]) -> str | None:
        """What ``of`` (a tag, or a name: its default) replaced as the default, or what that one replaced, ...: the
        first of that chain still in ``left``. For a name whose chain is spent, the version loaded last."""
        tag = self.defaults.get(of, of)
        seen = {tag}  # a chain that comes back to its start (a promoted, then a promoted back) ends there
        while (tag := self.previous.get(tag)) is not None and tag not in seen:
            if tag in left:
                return tag
            seen.add(tag)
        return left[-1] if of in self.defaults else None

    def split(self, name: str) -> Split:
        """How ``name``'s unversioned requests are shared now, by version (canaries in the order they started)."""
        mine = [t for t in self.tags if split(t)[0] == name]
        return Split(
            split(self.defaults.get(name) or mine[-1])[1],
            tuple((split(t)[1], p) for t, p in self.traffic.items() if t in mine),
            tuple((split(t)[1], r) for t, r in self.shadows.items() if t in mine),
        )

    def shared(self) -> dict:
        """What hosts of one fleet share: versions in load order, defaults and rollouts (not each host's main model
        or change count)."""
        return {"tags": list(self.tags), **{k: getattr(self, k) for k in SHARED}}

    def adopted(self, shared: dict) -> "Desired":
        """This set made ``shared`` (the main model stays this host's)."""
        return replace(self, tags=tuple(shared["tags"]), **{k: dict(shared[k]) for k in SHARED})

    def dump(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def parse(cls, data: dict) -> "Desired":
        """From ``dump``'s JSON; a file written before rollouts existed has none."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data} | {"tags": tuple(data["tags"])})


def resolve(tag: str) -> str:
    """``name:latest`` (or a name alone) as the store's concrete ``name:version``; LookupError if absent, ValueError
    if it is no tag at all."""
    try:
        return str(bentoml.models.get(tag).tag)
    except bentoml.exceptions.NotFound:
        raise LookupError(f"{tag} is not in the model store") from None
    except bentoml.exceptions.BentoMLException as exc:  # not a valid tag
        raise ValueError(str(exc)) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone; or the number is someone else's process now
        return False
    return True


class Repository:
    """``models.json`` in ``folder``: read, changed under a lock, watched by its signature. The lock blocks: an event
    loop takes it in a thread."""

    def __init__(self, folder: str, kind: str) -> None:
        self.kind = kind  # front or engine
        self.folder = Path(folder or tempfile.mkdtemp(prefix="resnet-state-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / FILE
        self.seen: tuple[int, int] | None = None

    @contextmanager
    def _locked(self):
        with open(self.folder / f"{FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def read(self, initial: list[str]) -> Desired:
        """The desired set, to apply (the watch counts it as seen); written first from ``initial`` (RESNET_MODELS) if
        there is none yet."""
        with self._locked():
            return self._read(seen=True) or self._write(Desired.of([resolve(t) for t in initial]))

    def peek(self) -> Desired:
        """The desired set, to look at: what another process wrote stays for the watch to apply."""
        with self._locked():
            current = self._read()
        if current is None:
            raise RuntimeError(f"{self.path} is missing")
        return current

    def change(self, how: Callable[[Desired], Desired]) -> Desired:
        """``how(desired)`` written as the next desired set, atomically with respect to other processes."""
        with self._locked():
            current = self._read()
            if current is None:
                raise RuntimeError(f"{self.path} is missing")
            return self._write(replace(how(current), generation=current.generation + 1))

    def forget_processes(self) -> None:
        """A new deployment: the records of an earlier one's processes go (their numbers may be reused)."""
        for record in self.folder.glob("applied-*"):
            record.unlink(missing_ok=True)

    def applied(self, desired: Desired) -> None:
        """Say that this process serves ``desired`` now."""
        (self.folder / f"applied-{self.kind}-{os.getpid()}").write_text(str(desired.generation))

    def behind(self, desired: Desired, kind: str = "") -> list[int]:
        """The live processes (of ``kind``, if given) that have not yet applied ``desired``; a dead one's record is
        removed."""
        late = []
        for record in self.folder.glob(f"applied-{kind}*"):
            pid = int(record.name.rsplit("-", 1)[1])
            if not _alive(pid):
                record.unlink(missing_ok=True)
            elif int(record.read_text() or 0) < desired.generation:
                late.append(pid)
        return late

    def changed(self) -> bool:
        """Whether the file changed since it was last read here."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_mtime_ns, stat.st_ino) != self.seen

    def _read(self, seen: bool = False) -> Desired | None:
        """The file's set; counted as seen by the watch only when the caller applies it (a change that is refused,
        or a look, must not hide another process's write from the watch)."""
        try:
            stat = self.path.stat()
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        if seen:
            self.seen = (stat.st_mtime_ns, stat.st_ino)
        return Desired.parse(data)

    def _write(self, desired: Desired) -> Desired:
        temporary = self.path.with_suffix(f".{os.getpid()}")
        temporary.write_bytes(desired.dump())
        os.replace(temporary, self.path)
        stat = self.path.stat()
        self.seen = (stat.st_mtime_ns, stat.st_ino)
        return desired


class Keeper:
    """This process's side of the desired set: a load is prepared here first (read, loaded and warmed; a broken model
    fails here and changes nothing), then written and applied; the watch applies what other processes wrote."""

    def __init__(
        self,
        repository: Repository,
        prepare: Callable[[str, bool, Plan | None], Awaitable[None]],
        apply: Callable[[Desired], Awaitable[None]],
        settle_s: float = 120,
    ) -> None:
        self.repository, self.prepare, self.apply, self.settle_s = repository, prepare, apply, settle_s
        self.lock = asyncio.Lock()

    async def load(self, name: str, version: str | None, default: bool, plan: Plan | None = None) -> Desired:
        """A plain load (``plan`` None: the default when ``default``), or a canary's or shadow's; 400 for a version
        the store lacks, or a rollout the set refuses (checked before anything is loaded)."""
        try:
            tag = resolve(f"{name}:{version or 'latest'}")
        except (LookupError, ValueError) as exc:  # Triton answers 400 for a model its repository lacks
            raise ApiError(400, "unknown_model", str(exc)) from None

        def how(desired: Desired) -> Desired:
            return desired.loaded(tag, default) if plan is None else desired.routed(tag, plan)

        async with self.lock:
            how(await asyncio.to_thread(self.repository.peek))
            try:
                await self.prepare(tag, default and plan is None, plan)
            except ApiError:
                raise
            except Exception as exc:  # the reason: a file onnxruntime refuses, metadata that breaks the contract
                log.warning("loading %s failed: %s", tag, exc)
                raise ApiError(400, "load_failed", f"{tag} cannot be loaded: {exc}") from None
            desired = await asyncio.to_thread(self.repository.change, how)
            await self._apply(desired)
        await self.settled(desired)
        return desired

    async def unload(self, name: str, version: str | None) -> Desired:
        async with self.lock:
            try:
                desired = await asyncio.to_thread(self.repository.change, lambda d: d.unloaded(name, version))
            except LookupError as exc:
                raise ApiError(404, "unknown_model", str(exc)) from None
            except ValueError as exc:
                raise ApiError(409, "refused", str(exc)) from None
            await self._apply(desired)
        await self.settled(desired)
        return desired

    async def adopt(self, shared: dict) -> Desired:
        """This host's set made ``shared`` (an engine told by a front, or a front following its fleet); each process
        loads and warms what is new as it applies it."""
        async with self.lock:
            return await self._adopt(shared)

    async def _adopt(self, shared: dict) -> Desired:
        current = await asyncio.to_thread(self.repository.peek)
        if current.shared() == shared:
            return current
        desired = await asyncio.to_thread(self.repository.change, lambda d: d.adopted(shared))
        await self._apply(desired)
        return desired

    async def follow(self, agreed: Callable[[], Awaitable[dict | None]], every_s: float = 1.0) -> None:
        """Adopt each new set that every engine of the fleet agrees on: a change made through another front. Only a
        change on the engines counts: while they catch up with this front's own change, or disagree after a
        partition, the set they last agreed on stays as it was, and so does this host's."""
        last = None
        while True:
            await asyncio.sleep(every_s)
            async with self.lock:  # asked under the lock: never a set from the middle of this process's own change
                try:
                    shared = await agreed()
                    if shared is not None and shared != last:
                        await self._adopt(shared)
                        last = shared  # only once adopted: a failed adoption is tried again
                except Exception:
                    log.exception("the fleet's set of models could not be followed")

    async def _apply(self, desired: Desired) -> None:
        await self.apply(desired)
        self.repository.applied(desired)

    async def settled(self, desired: Desired, kind: str = "") -> None:
        """Wait until every process on the host (of ``kind``, if given) serves ``desired`` (each loads and warms a
        new model itself), so that a call which returned is answered the same by every worker. (An engine does not
        wait: the front that called it does, and holds its own change until the engine answers.)"""
        if not self.settle_s:
            return
        deadline = asyncio.get_running_loop().time() + self.settle_s
        while late := self.repository.behind(desired, kind):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("processes %s have not applied model set %d yet", late, desired.generation)
                return
            await asyncio.sleep(0.05)

    async def watch(self, every_s: float = 0.25) -> None:
        """Apply the desired set whenever another process changes it (a failure is logged, and the watch goes on)."""
        while True:
            await asyncio.sleep(every_s)
            if self.repository.changed():
                async with self.lock:
                    try:
                        await self._apply(await asyncio.to_thread(self.repository.read, []))
                    except Exception:
                        log.exception("the desired set of models could not be applied")
