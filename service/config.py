"""Service settings from environment variables; every default is documented in the README.

It imports nothing of the service: every layer may read it.
"""

import glob
import os
import secrets
import tempfile
from dataclasses import dataclass, field

from contract.threads import ThreadPlan, usable_cpus

CUDA = "CUDAExecutionProvider"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RESNET_{name}", default)


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in _env(name, default).split(",") if v.strip())


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use: those CUDA_VISIBLE_DEVICES names, else the device files present."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return sum(1 for device in visible.split(",") if device.strip() not in ("", "-1"))
    return len(glob.glob("/dev/nvidia[0-9]*"))


def engine_device(index: int) -> int:
    """The GPU engine ``index`` runs on: engines beyond the GPUs share them in turn, each with its own sessions, so
    that their Python work (parsing, batching, encoding) runs in parallel beside one GPU."""
    return index % max(1, visible_gpus())


def _engines() -> int:
    """Engine processes beside the fronts: auto is one per GPU when CUDA is asked for and no engine is remote."""
    value = _env("ENGINES", "auto")
    if value != "auto":
        return int(value)
    wants_cuda = CUDA in _list("PROVIDERS", f"{CUDA},CPUExecutionProvider")
    return visible_gpus() if wants_cuda and not _env("ENGINE_URL", "") else 0


def _front_workers() -> int:
    """As set; else one beside an in-process engine (measured fastest on CPU), or the cores the engines leave."""
    engines = _engines()
    return int(_env("FRONT_WORKERS", "0")) or (max(1, usable_cpus() - engines) if engines else 1)


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = field(default_factory=lambda: _list("MODELS", "shapes-resnet10:latest"))
    providers: tuple[str, ...] = field(default_factory=lambda: _list("PROVIDERS", f"{CUDA},CPUExecutionProvider"))
    require_gpu: bool = field(default_factory=lambda: _env("REQUIRE_GPU", "0") == "1")
    tf32: bool = field(default_factory=lambda: _env("TF32", "0") == "1")
    cuda_nhwc: bool = field(default_factory=lambda: _env("CUDA_NHWC", "0") == "1")  # the CUDA provider's prefer_nhwc
    gpu_mem_limit_mb: int = field(default_factory=lambda: int(_env("GPU_MEM_LIMIT_MB", "0")))  # per engine; 0: none
    runtime: str = field(default_factory=lambda: _env("RUNTIME", "auto"))  # CPU: auto, onnxruntime, openvino-*
    ort_threads: int = field(default_factory=lambda: int(_env("ORT_THREADS", "0")))  # 0: the CPUs this process may use
    ort_spinning: bool = field(default_factory=lambda: _env("ORT_SPINNING", "0") == "1")
    batching: bool = field(default_factory=lambda: _env("BATCHING", "1") != "0")
    max_batch_size: int = field(default_factory=lambda: int(_env("MAX_BATCH_SIZE", "32")))
    max_latency_ms: int = field(default_factory=lambda: int(_env("MAX_LATENCY_MS", "1000")))
    batches_in_flight: int = field(default_factory=lambda: int(_env("BATCHES_IN_FLIGHT", "1")))  # per engine
    engines: int = field(default_factory=_engines)  # 0: the model runs in the front's process
    front_workers: int = field(default_factory=_front_workers)
    max_concurrency: int = field(default_factory=lambda: int(_env("MAX_CONCURRENCY", "64")))
    max_uploads: int = field(default_factory=lambda: int(_env("MAX_UPLOADS", "256")))
    body_timeout_s: float = field(default_factory=lambda: float(_env("BODY_TIMEOUT_S", "10")))
    timeout_s: float = field(default_factory=lambda: float(_env("TIMEOUT_S", "30")))
    header_timeout_s: float = field(default_factory=lambda: float(_env("HEADER_TIMEOUT_S", "10")))
    max_headers: int = field(default_factory=lambda: int(_env("MAX_HEADERS", "100")))
    max_header_bytes: int = field(default_factory=lambda: int(_env("MAX_HEADER_BYTES", str(16 * 2**10))))
    decoder: str = field(default_factory=lambda: _env("DECODER", "pillow"))  # or nvimgcodec (GPU hosts)
    max_pixels: int = field(default_factory=lambda: int(_env("MAX_PIXELS", "40000000")))
    max_aspect: float = field(default_factory=lambda: float(_env("MAX_ASPECT", "20")))
    max_images: int = field(default_factory=lambda: int(_env("MAX_IMAGES", "32")))
    max_body_bytes: int = field(default_factory=lambda: int(_env("MAX_BODY_BYTES", str(20 * 2**20))))
    api_token: str = field(default_factory=lambda: _env("API_TOKEN", ""))
    grpc_port: int = field(default_factory=lambda: int(_env("GRPC_PORT", "8001")))  # the protocol over gRPC; 0: off
    # Empty: the model runs in the front's own process. Else the base URL of an engine server.
    engine_url: str = field(default_factory=lambda: _env("ENGINE_URL", ""))
    engine_max_body_bytes: int = field(default_factory=lambda: int(_env("ENGINE_MAX_BODY_BYTES", str(256 * 2**20))))
    engine_token: str = field(default_factory=lambda: _env("ENGINE_TOKEN", ""))
    # requests the engine server holds at once; 0: what its fronts can send (front workers × their concurrency)
    engine_max_in_flight: int = field(default_factory=lambda: int(_env("ENGINE_MAX_IN_FLIGHT", "0")))
    # where the desired set of models is kept (service/repository.py); empty: a fresh folder per deployment
    state_dir: str = field(default_factory=lambda: _env("STATE_DIR", ""))
    # a shadow's top-1 agreement with the default below which its alert fires (deploy/prometheus/rules.yaml)
    min_agreement: float = field(default_factory=lambda: float(_env("MIN_AGREEMENT", "0.95")))
    # a shadow's copies are dropped while live calls keep an engine busier than this share of the last second
    shadow_max_busy: float = field(default_factory=lambda: float(_env("SHADOW_MAX_BUSY", "0.8")))
    # engines that disagree on the set this long are given the one most of them hold; 0: twice the request timeout
    fleet_mend_s: float = field(default_factory=lambda: float(_env("FLEET_MEND_S", "0")))
    access_log: bool = field(default_factory=lambda: _env("ACCESS_LOG", "0") == "1")
    tracing: bool = field(default_factory=lambda: _env("TRACING", "0") == "1")

    def thread_plan(self, role: str) -> ThreadPlan:
        """Threads per pool for a serving process of ``role`` (contract/threads.py), sharing the CPUs with the
        role's other workers on the host; RESNET_ORT_THREADS honoured."""
        workers = max(1, self.engines) if role == "engine" else self.front_workers
        return ThreadPlan.make(role, self.ort_threads, processes=workers)

    def request_layers(self) -> dict:
        """BentoML's per-request layers (access log, OpenTelemetry spans) off the hot path unless asked for."""
        every_url = [".*"]  # OpenTelemetry's exclusion list
        return {
            "logging": {"access": {"enabled": self.access_log}},
            "tracing": {} if self.tracing else {"excluded_urls": every_url},
        }


def share_deployment(engines: int) -> None:
    """What every worker of one deployment shares, set once before any of them starts (BentoML's ``on_deployment``
    hook): the workers inherit this process's environment, and read it as their settings. RESNET_ENGINE_TOKEN, the
    fronts' secret for the engines beside them (fresh unless set); RESNET_STATE_DIR, the desired set of models
    (service/repository.py; a fresh folder unless set); RESNET_METRICS_DIR, this deployment's Prometheus files
    (service/metrics.py); RESNET_ENGINE_SOCKETS, the folder of the engines' own sockets (``engine_socket``)."""
    if engines:
        os.environ.setdefault("RESNET_ENGINE_TOKEN", secrets.token_urlsafe(32))
        os.environ["RESNET_ENGINE_SOCKETS"] = tempfile.mkdtemp(prefix="resnet-engines-")
    os.environ.setdefault("RESNET_STATE_DIR", tempfile.mkdtemp(prefix="resnet-state-"))
    os.environ["RESNET_METRICS_DIR"] = tempfile.mkdtemp(prefix="resnet-metrics-")


def engine_socket(index: int) -> str:
    """The socket on which engine ``index`` beside the fronts serves each front worker."""
    return os.path.join(os.environ["RESNET_ENGINE_SOCKETS"], f"engine-{index}.sock")
