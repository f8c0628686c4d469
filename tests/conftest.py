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
