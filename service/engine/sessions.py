"""onnxruntime sessions for one loaded model, checked against its metadata and warmed at every shape bucket."""

import logging
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort

from contract import ModelMetadata

from ..catalog import Entry
from ..config import CUDA

log = logging.getLogger("resnet.engine")


@dataclass(frozen=True)
class Cuda:
    """The CUDA provider's options for an engine's sessions (unused on a CPU host).

    TF32 is off unless asked for: it moves fp32 logits beyond the tolerance an fp32 export is checked
    to. Shapes vary, so cuDNN picks convolution algorithms by heuristic instead of an exhaustive search
    per shape. The arena grows by what is asked, not by doubling, up to ``mem_limit`` bytes when set.
    """

    device: int = 0
    tf32: bool = False
    mem_limit: int = 0  # bytes for one session's arena; 0: onnxruntime's default (unbounded)
    nhwc: bool = False  # cuDNN's channels-last convolutions (``prefer_nhwc``): faster where the GPU is the limit

    def options(self) -> dict[str, str]:
        options = {
            "device_id": str(self.device),
            "cudnn_conv_algo_search": "HEURISTIC",
            "use_tf32": str(int(self.tf32)),
            "arena_extend_strategy": "kSameAsRequested",
        }
        options |= {"prefer_nhwc": "1"} if self.nhwc else {}
        return options | ({"gpu_mem_limit": str(self.mem_limit)} if self.mem_limit else {})


def make_session(
    path, providers: tuple[str, ...], threads: int, require_gpu: bool, spinning: bool = False, cuda: Cuda = Cuda()
) -> ort.InferenceSession:
    """A session on the first available provider of ``providers``; loud about any fallback.

    Intra-op threads do not spin between calls unless asked: with a small model and many small
    calls, spinning costs CPU per request for no gain in latency (BENCHMARKS.md).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    chosen = [(CUDA, cuda.options()) if p == CUDA else p for p in providers]
    if CUDA in providers and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # no CUDA libraries on this host
            log.debug("preload_dlls failed: %s", exc)
    try:
        session = ort.InferenceSession(str(path), opts, providers=chosen)
    except Exception as exc:  # unreadable or invalid graph: say which file, then stop
        raise RuntimeError(f"{path} cannot be loaded by onnxruntime: {exc}") from None
    active = session.get_providers()[0]
    if CUDA in providers and active != CUDA:
        if require_gpu:
            raise RuntimeError(f"RESNET_REQUIRE_GPU=1 but CUDA is unavailable; onnxruntime chose {active}")
        log.warning("!!! CUDA requested but unavailable: running %s on %s !!!", path, active)
    return session


def check_contract(tag: str, meta: ModelMetadata, session: ort.InferenceSession, head: np.ndarray) -> None:
    """Refuse a model whose metadata contradicts its graph: the service never guesses."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = []
    if set(inputs) != {"pixels"} or inputs["pixels"].type != "tensor(uint8)":
        problems.append(f"graph input is {[(i.name, i.type) for i in inputs.values()]}, expected pixels uint8")
    if set(outputs) != {"logits", "embedding", "features"}:
        problems.append(f"graph outputs are {sorted(outputs)}, expected logits, embedding, features")
    else:
        k, c = outputs["logits"].shape[-1], outputs["embedding"].shape[-1]
        if k != meta.num_classes:  # (the contract itself holds labels to num_classes)
            problems.append(f"graph has {k} classes, metadata {meta.num_classes}")
        if c != meta.embedding_dim or head.shape != (meta.num_classes, meta.embedding_dim):
            problems.append(f"graph embedding {c}, metadata {meta.embedding_dim}, head {head.shape}")
    if problems:
        raise RuntimeError(f"model {tag}: metadata contradicts the graph: {'; '.join(problems)}")


def warm(model, shapes: list[tuple[int, int, int]]) -> int:
    """Run ``model`` once at each (batch size, height, width) before it takes traffic; the number run."""
    for n, h, w in shapes:
        try:
            model.run(np.zeros((n, h, w, 3), np.uint8), ["logits"])
        except Exception as exc:
            raise RuntimeError(f"the warm-up call at batch {n}, {h}×{w} failed: {exc}") from None
    return len(shapes)


FIXED_IMAGES = 8  # what a session holds whatever its batch (weights, cuDNN workspace), in images' activations


def memory_shares(budget: int, sizes: list[int]) -> dict[int, int]:
    """A model's GPU memory budget split over its fixed-batch sessions by what each needs: activations grow with
    the batch. An equal split left the batch-128 session of ResNet-50 short at warm-up on an H200."""
    weight = sum(n + FIXED_IMAGES for n in sizes)
    return {n: budget * (n + FIXED_IMAGES) // weight for n in sizes}


def batch_sizes(max_batch: int) -> list[int]:
    """Powers of two up to the first that holds ``max_batch``: the batch sizes GPU sessions are kept at."""
    sizes = [1]
    while sizes[-1] < max_batch:
        sizes.append(2 * sizes[-1])
    return sizes


class Sessions:
    """One loaded model's onnxruntime sessions, checked against its metadata.

    onnxruntime's CUDA convolutions re-plan whenever a session's input shape changes, at many times
    the cost of a call. So on CUDA (``fixed_batches``) there is one session per power-of-two batch
    size, and a batch is padded to the next one; each session then sees one batch size (and, under
    ``crop``, one image size). ``cuda.mem_limit`` is the budget of all of them together (memory_shares).
    """

    def __init__(
        self,
        entry: Entry,
        providers: tuple[str, ...],
        threads: int,
        require_gpu: bool,
        max_batch: int = 1,
        fixed_batches: bool | None = None,
        spinning: bool = False,
        cuda: Cuda = Cuda(),
    ) -> None:
        self.entry, self.meta = entry, entry.meta
        path = entry.path / "model.onnx"
        sizes = batch_sizes(max_batch) if fixed_batches or (fixed_batches is None and CUDA in providers) else []
        self.shares = memory_shares(cuda.mem_limit, sizes or [1]) if cuda.mem_limit else {}
        limits = {n: replace(cuda, mem_limit=self.shares.get(n, 0)) for n in sizes or [1]}
        self.session = make_session(path, providers, threads, require_gpu, spinning, limits[1])
        self.provider = self.session.get_providers()[0]
        check_contract(entry.tag, self.meta, self.session, entry.head()[0])
        if fixed_batches is None and self.provider != CUDA:  # CUDA asked for but not there: one session
            sizes = []
        self.sessions: dict[int, ort.InferenceSession] = {
            n: make_session(path, providers, threads, require_gpu, spinning, limits[n]) if n > 1 else self.session
            for n in sizes
        }
        log.warning(
            "model %s (%s) on %s, %d session(s)",
            entry.tag,
            self.meta.precision,
            self.provider,
            max(1, len(self.sessions)),
        )

    def warm_shapes(self) -> list[tuple[int, int, int]]:
        """One session: every shape bucket the policies produce. Fixed batch sizes (CUDA): the batch-1 session at
        every bucket, then every session at the ``crop`` square, the one shape that repeats. A CUDA session re-plans
        its convolutions whenever its input shape changes, warmed or not, so more shapes per session would buy
        nothing but arena memory (on an H200, 29 buckets × 8 batch sizes × 2 models: 96 s and 135 GiB)."""
        buckets, square = self.meta.preprocessing.buckets(), (self.meta.preprocessing.crop.size,) * 2
        if not self.sessions:
            return [(1, h, w) for h, w in buckets]
        ones = [(1, h, w) for h, w in buckets if (h, w) != square]
        return ones + [(n, *square) for n in self.sessions]

    def warmup(self) -> int:
        try:
            return warm(self, self.warm_shapes())
        except RuntimeError as exc:
            mib = ", ".join(f"batch {n}: {m >> 20}" for n, m in self.shares.items())
            budget = f" (its sessions' MiB of RESNET_GPU_MEM_LIMIT_MB: {mib})" if self.shares else ""
            raise RuntimeError(f"model {self.entry.tag}: {exc}{budget}") from None

    def run(self, pixels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """The named outputs for a batch of (N, H, W, 3) uint8 images of one shape."""
        n = len(pixels)
        size = next((s for s in self.sessions if s >= n), None)
        if size is None:  # no fixed batch sizes (CPU), or a batch beyond the largest
            return dict(zip(names, self.session.run(names, {"pixels": pixels}), strict=True))
        padded = np.concatenate([pixels, np.zeros((size - n, *pixels.shape[1:]), np.uint8)]) if size > n else pixels
        outs = self.sessions[size].run(names, {"pixels": padded})
        return {name: out[:n] for name, out in zip(names, outs, strict=True)}
