"""`make container-test` in CI: ./Dockerfile and `bentoml containerize` built with podman, run, asked to classify."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("container")]


def test_container_images_build_run_and_classify() -> None:
    env = {**os.environ, "PY": sys.executable, "CONTAINER_PORT": "3377"}
    run = subprocess.run(["bash", "deploy/container-test.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count('"label":"star"') == 2, "both images answered with the right label"
