"""The classifier behind every public route: resolve the model and policy, prepare images, ask the engine, label."""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from contract.metadata import POLICIES

from ..catalog import Entry
from ..config import Settings
from ..engine.interface import Engine, Item, Result
from ..errors import ApiError, EngineUnavailable
from ..imaging.decoders import Decode
from ..imaging.preprocess import ImageLimits, Prepared, check, decode, prepare
from ..metrics import PREPROCESS_SECONDS, REQUESTS, collected, left_out
from ..rollout import Split
from .comparison import Comparison, figures
from .heatmap import cam, normalise, overlay_png, peak
from .schemas import Classification, Embedding, Explanation, OutOfDistribution, Prediction, Timing
from .telemetry import Monitor, ood_status

log = logging.getLogger("resnet.front")
INLINE_BYTES, INLINE_PIXELS = 1 << 19, 1 << 20  # what may decode on the event loop: a few ms, a crafted header ~0.1 s


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise, in float64: probabilities of [N, K] logits."""
    z = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@dataclass(frozen=True)
class Image:
    """One image as the model saw it, what the engine answered, and the time each step took."""

    prepared: Prepared
    result: Result
    probabilities: np.ndarray  # [K]
    ood: OutOfDistribution | None
    preprocess_ms: float
    inference_ms: float

    def timing(self) -> Timing:
        r = self.result
        return Timing(
            preprocess_ms=self.preprocess_ms,
            inference_ms=self.inference_ms,
            model_ms=r.model_ms,
            batch_size=r.batch_size,
        )


class Front:
    """Decoding, validation and labels for the loaded model versions; ``engine`` batches across every client."""

    def __init__(self, engine: Engine, settings: Settings, jpeg: Decode | None) -> None:
        self.engine, self.settings, self.jpeg = engine, settings, jpeg
        self.entries: dict[str, Entry] = {}  # by store tag, name:version
        self.splits: dict[str, Split] = {}  # name → how requests naming no version are shared among its versions
        self.heads: dict[str, np.ndarray] = {}
        self.monitors: dict[str, Monitor] = {}
        self.comparisons: dict[tuple[str, str], Comparison] = {}  # by (shadow tag, the default version it copies)
        self.mirrors: set[asyncio.Task] = set()  # shadow copies in flight (kept referenced until done)
        self.decoding = 0  # images decoding in the executor now
        self.main = ""  # the model of requests that name none
        self.gone: dict[str, float] = {}  # versions unloaded, and when: their series leave /metrics

    def update(self, entries: dict[str, Entry], splits: dict[str, Split], main: str) -> None:
        """Serve these versions, shared as ``splits`` say, from now on (the engine serves them already, warm)."""
        self.heads = {t: self.heads[t] if t in self.heads else e.head()[0] for t, e in entries.items()}
        self.monitors = {t: self.monitors.get(t) or Monitor(e) for t, e in entries.items()}
        splits = {name: self._comparable(name, split, entries) for name, split in splits.items()}
        pairs = [(name, v, split.default) for name, split in splits.items() for v, _ in split.shadows]
        self.comparisons = {
            (f"{n}:{v}", d): self.comparisons.get((f"{n}:{v}", d)) or Comparison(n, v, d) for n, v, d in pairs
        }
        now = time.monotonic()
        self.gone = {t: self.gone.get(t, now) for t in (self.entries.keys() | self.gone.keys()) - entries.keys()}
        self.entries, self.splits, self.main = entries, splits, main

    def keep_series(self, text: str) -> str:
        """/metrics without the series of versions unloaded a while ago (metrics.left_out): their own figures, and a
        shadow's comparison with them as the default."""
        gone = {}
        for tag, left in self.gone.items():
            name, _, version = tag.partition(":")
            gone |= {(f'model="{name}"', f'{label}="{version}"'): left for label in ("version", "default")}
        return left_out(text, gone)

    @staticmethod
    def _comparable(name: str, split: Split, entries: dict[str, Entry]) -> Split:
        """``split`` without the shadows that cannot take the default's pixels (other preprocessing, or a larger
        smallest side): their copies would compare different images."""
        default = entries.get(f"{name}:{split.default}")
        kept = []
        for version, rate in split.shadows:
            shadow = entries.get(f"{name}:{version}")
            same = default and shadow and shadow.meta.preprocessing == default.meta.preprocessing
            if same and shadow.meta.min_input_size <= default.meta.min_input_size:
                kept.append((version, rate))
            else:
                log.warning("shadow %s:%s prepares images unlike the default: no copies are sent to it", name, version)
        return replace(split, shadows=tuple(kept))

    def resolve(self, model: str | None, policy: str | None, top_k: int | None) -> tuple[Entry, str]:
        """``model`` is a name (its default version, or a canary's by the request's share), ``name:version``, or
        None (the main model's)."""
        name, _, version = (model or self.main).partition(":")
        if not version and name in self.splits:
            version = self.splits[name].pick()
        entry = self.entries.get(f"{name}:{version}")
        if entry is None:
            loaded = ", ".join(self.entries)
            raise ApiError(404, "unknown_model", f"model {model!r} is not loaded; loaded: {loaded}")
        policy = policy or entry.meta.preprocessing.policy
        if policy not in POLICIES:
            raise ApiError(400, "bad_policy", f"policy {policy!r} is not one of {', '.join(POLICIES)}")
        k = entry.meta.num_classes
        if top_k is not None and not 1 <= top_k <= k:
            raise ApiError(400, "bad_top_k", f"top_k must be between 1 and {k}, got {top_k}")
        return entry, policy

    async def _prepare(self, entry: Entry, policy: str, data: bytes, alone: bool) -> tuple[Prepared, float]:
        """The image checked, then decoded. On the event loop when it is a request's only image (``alone``), small in
        bytes (its header cheap to read, however crafted) and in pixels, and no other image is decoding: two thread
        hand-offs spared (BENCHMARKS.md). Else in the default executor."""
        t = time.perf_counter()
        limits, pre = ImageLimits.of(self.settings, entry.meta.min_input_size), entry.meta.preprocessing
        if alone and not self.decoding and len(data) <= INLINE_BYTES:
            img = check(data, limits)
            if img.width * img.height <= INLINE_PIXELS:
                prepared = decode(img, data, policy, pre, self.jpeg)
            else:
                prepared = await self._off_loop(decode, img, data, policy, pre, self.jpeg)
        else:
            prepared = await self._off_loop(prepare, data, policy, pre, limits, self.jpeg)
        seconds = time.perf_counter() - t
        PREPROCESS_SECONDS.labels(policy=policy).observe(seconds)
        h, w = prepared.pixels.shape[:2]
        REQUESTS.labels(model=entry.name, policy=policy, bucket=f"{h}x{w}").inc()
        return prepared, seconds * 1e3

    async def _off_loop(self, work: Callable[..., Prepared], *args) -> Prepared:
        """``work`` in the default executor, counted as decoding meanwhile."""
        self.decoding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(None, work, *args)
        finally:
            self.decoding -= 1

    async def run(
        self, entry: Entry, policy: str, images: list[bytes], outputs: tuple[str, ...] = ("logits",)
    ) -> list[Image]:
        """Prepare ``images`` concurrently, then one engine call for them all; every answer is counted, and what
        the default answers is copied to its shadows."""
        monitor = self.monitors[entry.tag]  # before any wait: the version may be unloaded meanwhile
        alone = len(images) == 1
        prepared = await asyncio.gather(*(self._prepare(entry, policy, data, alone) for data in images))
        outputs = tuple(dict.fromkeys((*outputs, *monitor.outputs)))
        t = time.perf_counter()
        results = await self.engine.infer([Item(entry.tag, p.pixels, outputs) for p, _ in prepared])
        inference_ms = (time.perf_counter() - t) * 1e3
        probabilities, verdicts = self._observe(monitor, results)
        ran = [
            Image(p, r, probs, ood, ms, inference_ms)
            for (p, ms), r, probs, ood in zip(prepared, results, probabilities, verdicts, strict=True)
        ]
        split = self.splits.get(entry.name)
        if split is not None and split.default == entry.version:
            for version in split.mirrored():
                task = asyncio.get_running_loop().create_task(self._shadow(entry, f"{entry.name}:{version}", ran))
                self.mirrors.add(task)
                task.add_done_callback(self.mirrors.discard)
        return ran

    @staticmethod
    def _observe(monitor: Monitor, results: list[Result]) -> tuple[np.ndarray, list[OutOfDistribution | None]]:
        """(probabilities, verdicts) of a version's results, counted in its telemetry."""
        probabilities = softmax(np.stack([r.outputs["logits"] for r in results]))
        outputs = results[0].outputs
        embeddings = np.stack([r.outputs["embedding"] for r in results]) if "embedding" in outputs else None
        return probabilities, monitor.observe(probabilities, embeddings, [r.model_ms for r in results])

    async def _shadow(self, live: Entry, tag: str, images: list[Image]) -> None:
        """``tag`` answers the same pixels, after live work; compared with what the default answered, never sent."""
        entry, monitor = self.entries.get(tag), self.monitors.get(tag)
        comparison = self.comparisons.get((tag, live.version))
        if entry is None or comparison is None or monitor is None:  # no longer a shadow
            return
        outputs = ("logits", *monitor.outputs)
        try:
            results = await self.engine.infer([Item(tag, i.prepared.pixels, outputs, shadow=True) for i in images])
        except EngineUnavailable:
            comparison.dropped.inc(len(images))
            return
        except Exception:
            log.exception("shadow %s failed", tag)
            return
        probabilities, verdicts = self._observe(monitor, results)
        best = probabilities.argmax(1)
        live_best = [int(i.probabilities.argmax()) for i in images]
        comparison.observe(
            ([entry.meta.labels[b] for b in best], [live.meta.labels[b] for b in live_best]),
            (probabilities.max(1), np.array([i.probabilities[b] for i, b in zip(images, live_best, strict=True)])),
            (verdicts, [i.ood for i in images]),
        )

    def _classification(self, entry: Entry, policy: str, image: Image, top_k: int) -> dict:
        probs = image.probabilities
        order = np.argsort(-probs)[:top_k]
        labels, (h, w) = entry.meta.labels, image.prepared.pixels.shape[:2]
        return dict(
            model=entry.name,
            version=entry.version,
            policy=policy,
            predictions=[Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in order],
            original_size=image.prepared.original,
            inferred_size=(w, h),
            timing=image.timing(),
            ood=image.ood,
        )

    async def classify(
        self, images: list[bytes], top_k: int, model: str | None, policy: str | None
    ) -> list[Classification]:
        """Labelled top-k for each image, in order."""
        if not 1 <= len(images) <= self.settings.max_images:
            raise ApiError(400, "bad_batch", f"send 1 to {self.settings.max_images} images, got {len(images)}")
        entry, policy = self.resolve(model, policy, top_k)
        ran = await self.run(entry, policy, images)
        return [Classification(**self._classification(entry, policy, image, top_k)) for image in ran]

    async def probabilities(
        self, model: str, policy: str | None, top_k: int, images: list[bytes]
    ) -> tuple[str, list[Image]]:
        """(policy used, each image's answer) for encoded images: the Open Inference Protocol's image models."""
        entry, policy = self.resolve(model, policy, top_k)
        return policy, await self.run(entry, policy, images)

    async def explain(
        self, data: bytes, class_index: int | None, include_map: bool, top_k: int, model: str | None, policy: str | None
    ) -> Explanation:
        """Class activation map (Zhou et al., 2016) from the same forward pass as the prediction."""
        entry, policy = self.resolve(model, policy, top_k)
        k = entry.meta.num_classes
        if class_index is not None and not 0 <= class_index < k:
            raise ApiError(400, "bad_class_index", f"class_index must be in [0, {k}), got {class_index}")
        head = self.heads[entry.tag]  # before any wait, as in run
        (image,) = await self.run(entry, policy, [data], ("logits", "features"))
        out, pixels = image.result.outputs, image.prepared.pixels
        cls = int(out["logits"].argmax()) if class_index is None else class_index
        cam01 = normalise(cam(head[cls], out["features"]))
        x, y = peak(cam01)
        x, y = x * pixels.shape[1] / cam01.shape[1], y * pixels.shape[0] / cam01.shape[0]
        return Explanation(
            **self._classification(entry, policy, image, top_k),
            class_index=cls,
            class_label=entry.meta.labels[cls],
            peak=image.prepared.to_original(x, y),
            heatmap_png=overlay_png(pixels, cam01),
            cam=cam01.round(4).tolist() if include_map else None,
        )

    async def embed(self, data: bytes, normalize: bool, model: str | None, policy: str | None) -> Embedding:
        """The pooled feature vector (the input of the linear head)."""
        entry, policy = self.resolve(model, policy, None)
        (image,) = await self.run(entry, policy, [data], ("logits", "embedding"))
        vec = image.result.outputs["embedding"].astype(np.float64)
        if normalize:
            vec = vec / max(np.linalg.norm(vec), 1e-12)
        return Embedding(
            model=entry.name,
            version=entry.version,
            dim=len(vec),
            normalized=normalize,
            embedding=vec.tolist(),
            timing=image.timing(),
            ood=image.ood,
        )

    async def models(self) -> list[dict]:
        """Each loaded version's metadata, its parity report, the provider it runs on, whether unversioned
        requests reach it (as the default or a canary) or a copy of them (a shadow), whether its answers carry the
        out-of-distribution verdict, and its live figures (a shadow's against the default, comparison.py)."""
        entries, splits, listed = self.entries, self.splits, []  # one set for the whole answer, whatever changes
        providers, found = await self.engine.providers(), await asyncio.to_thread(collected)
        for name in dict.fromkeys(e.name for e in entries.values()):
            split = splits[name]
            rollout = {v: {"traffic": p} for v, p in split.canaries} | {v: {"shadow_rate": r} for v, r in split.shadows}
            versions = [e for e in entries.values() if e.name == name]
            roles = {e.version: "shadow" if "shadow_rate" in rollout.get(e.version, {}) else "" for e in versions}
            live = figures(found, name, split.default, roles)
            listed += [
                {
                    **e.meta.model_dump(mode="json"),
                    "tag": e.tag,
                    "version": e.version,
                    "default": split.default == e.version,
                    "rollout": rollout.get(e.version),
                    "provider": providers.get(e.tag),
                    "ood": ood_status(e),
                    **live[e.version],
                }
                for e in versions
            ]
        return listed
