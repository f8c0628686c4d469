"""`make loadtest` smoke: a fresh service, locust headless for a few seconds, SLOs checked."""

import csv
import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loadtest")]


def test_loadtest_smoke(tmp_path) -> None:
    env = {
        **os.environ,
        "DURATION": "15s",
        "USERS": "4",
        "SPAWN_RATE": "4",
        "PORT": str(free_port()),
        "REPORTS": str(tmp_path),
        "BENTOML_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.run(["bash", "loadtest/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "SLO met" in proc.stdout + proc.stderr
    with open(tmp_path / "locust_stats.csv") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 20 and int(total["Failure Count"]) == 0
    assert (tmp_path / "locust.html").stat().st_size > 1000
