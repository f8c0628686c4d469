"""Shared paths and fixtures."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def shared_images() -> list[Path]:
    paths = sorted(IMAGES.iterdir())
    assert paths, f"no images in {IMAGES}"
    return paths


@pytest.fixture(scope="session")
def url(tmp_path_factory):
    """A real `bentoml serve` with the committed default model, fp32 and int8 (one per xdist worker)."""
    from tests.server import DEFAULT, import_models, serve

    home = tmp_path_factory.mktemp("bentoml")
    import_models(home, DEFAULT, DEFAULT.with_name("shapes-resnet10-int8"))
    models = "shapes-resnet10:latest,shapes-resnet10-int8:latest"
    env = {"RESNET_MODELS": models, "RESNET_MAX_LATENCY_MS": "10000", "RESNET_MAX_BODY_BYTES": str(4 * 2**20),
           "RESNET_MAX_CONCURRENCY": "512"}  # fmt: skip
    with serve(home, home / "server.log", **env) as base:
        yield base
