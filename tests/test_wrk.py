"""The compiled load generator against a real server: figures come back, and failures are counted."""

import pytest

from loadtest import wrk
from tests.conftest import IMAGES
from tests.server import DEFAULT, import_models, serve

pytestmark = pytest.mark.slow

PHOTOS = [IMAGES / "chelsea.png", IMAGES / "coffee.png", DEFAULT.parents[1] / "docs" / "star.png"]


def test_wrk_drives_real_photos_and_counts_failures(tmp_path) -> None:
    import_models(tmp_path, DEFAULT)
    with serve(tmp_path, tmp_path / "server.log") as url:
        good = wrk.sweep(url, PHOTOS, [1, 4], 2, policy="full")
        bad = wrk.run(url, PHOTOS, 2, 1, policy="full", model="no-such-model")
    assert [r["concurrency"] for r in good] == [1, 4]
    for r in good:
        assert r["requests"] > 10 and r["errors"] == r["socket_errors"] == 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] and r["images_per_s"] > 0
        assert 0 < r["client_cpu_ms"] < 5
    assert bad["requests"] > 0 and bad["errors"] == bad["requests"] and bad["images_per_s"] == 0, bad
