"""Service settings from environment variables; every default is documented in the README.

It imports nothing of the service: every layer may read it.
"""

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RESNET_{name}", default)


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in _env(name, default).split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = field(default_factory=lambda: _list("MODELS", "shapes-resnet10:latest"))
    providers: tuple[str, ...] = field(
        default_factory=lambda: _list("PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    )
    require_gpu: bool = field(default_factory=lambda: _env("REQUIRE_GPU", "0") == "1")
    tf32: bool = field(default_factory=lambda: _env("TF32", "0") == "1")
    ort_threads: int = field(default_factory=lambda: int(_env("ORT_THREADS", "0")))  # 0: all cores
    ort_spinning: bool = field(default_factory=lambda: _env("ORT_SPINNING", "0") == "1")
    batching: bool = field(default_factory=lambda: _env("BATCHING", "1") != "0")
    max_batch_size: int = field(default_factory=lambda: int(_env("MAX_BATCH_SIZE", "32")))
    max_latency_ms: int = field(default_factory=lambda: int(_env("MAX_LATENCY_MS", "1000")))
    front_workers: int = field(default_factory=lambda: int(_env("FRONT_WORKERS", "1")))
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
    # Empty: the model runs in the front's own process. Else the base URL of an engine server.
    engine_url: str = field(default_factory=lambda: _env("ENGINE_URL", ""))
    engine_max_body_bytes: int = field(default_factory=lambda: int(_env("ENGINE_MAX_BODY_BYTES", str(256 * 2**20))))
    engine_token: str = field(default_factory=lambda: _env("ENGINE_TOKEN", ""))
    access_log: bool = field(default_factory=lambda: _env("ACCESS_LOG", "0") == "1")
    tracing: bool = field(default_factory=lambda: _env("TRACING", "0") == "1")


SETTINGS = Settings()
