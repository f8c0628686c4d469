"""One thread budget per process (contract/threads.py): made from the CPUs a process may use, and in force inside
real serving workers, as threadpoolctl reports from inside them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from contract.threads import PLAN_LOGGED, ThreadPlan, cgroup_quota, usable_cpus
from service.config import engine_device
from tests.conftest import IMAGES, ROOT
from tests.server import DEFAULT, import_models, serve


def fake_cgroup(root: Path, cgroup: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        (root / "sys/fs/cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys/fs/cgroup" / name).write_text(text)
    return root


def test_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path) -> None:
    files = {"kubepods/cpu.max": "400000 100000\n", "kubepods/pod1/cpu.max": "150000 100000\n"}
    root = fake_cgroup(tmp_path, "0::/kubepods/pod1\n", files)
    assert cgroup_quota(root) == 1.5
    assert usable_cpus(root) == min(2, len(os.sched_getaffinity(0)))  # 1.5 CPUs rounds up, capped by affinity


def test_cgroup_v1_quota_and_no_quota(tmp_path) -> None:
    v1 = {"cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000"}
    root = fake_cgroup(tmp_path / "v1", "5:memory:/docker/c1\n4:cpu,cpuacct:/docker/c1\n", v1)
    assert cgroup_quota(root) == 1.0
    assert usable_cpus(root) == 1
    unlimited = fake_cgroup(tmp_path / "v2", "0::/user.slice\n", {"user.slice/cpu.max": "max 100000\n"})
    assert cgroup_quota(unlimited) is None
    assert usable_cpus(unlimited) == len(os.sched_getaffinity(0))


def test_engines_beyond_the_gpus_share_them_in_turn(monkeypatch) -> None:
    """RESNET_ENGINES=2 on a one-GPU host puts both engines on GPU 0 (not the second on a GPU that is not there)."""
    for visible, devices in (("0", [0, 0, 0]), ("2,3", [0, 1, 0, 1]), ("-1", [0, 0])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert [engine_device(i) for i in range(len(devices))] == devices, visible


@pytest.mark.slow
def test_affinity_not_the_node_counts() -> None:
    code = "import os; os.sched_setaffinity(0, {0}); from contract.threads import usable_cpus; print(usable_cpus())"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "1"


def test_roles_and_the_runtime_setting() -> None:
    assert ThreadPlan.make("in-process", cpus=4) == ThreadPlan("in-process", 4, 4, 1, 1, 8)
    assert ThreadPlan.make("front", cpus=4).runtime == 0  # a front of a remote engine runs no model
    assert ThreadPlan.make("engine", runtime_threads=3, cpus=8).runtime == 3  # RESNET_ORT_THREADS
    assert ThreadPlan.make("front", cpus=16, processes=15) == ThreadPlan("front", 1, 0, 1, 1, 5)  # a GPU host's fronts
    assert ThreadPlan.make("in-process", cpus=4, processes=2).runtime == 2  # two workers, each with a model
    with pytest.raises(ValueError, match="role"):
        ThreadPlan.make("everything")


def plans(log: Path) -> list[dict]:
    return [json.loads(line.split(PLAN_LOGGED, 1)[1]) for line in log.read_text().splitlines() if PLAN_LOGGED in line]


@pytest.mark.slow
def test_plan_in_force_in_a_worker_pinned_to_one_cpu(tmp_path) -> None:
    """A real worker started on one CPU of a bigger machine: one runtime thread, BLAS and OpenMP at one, as
    threadpoolctl saw them inside that worker; and it answers."""
    home, log = tmp_path / "home", tmp_path / "server.log"
    import_models(home, DEFAULT)
    command = ["taskset", "-c", "0", sys.executable, "-m", "bentoml", "serve", "service.service:Classifier"]
    with serve(home, log, RESNET_MODELS="shapes-resnet10:latest", command=command) as url:
        photo = (IMAGES / "astronaut.png").read_bytes()
        answer = httpx.post(f"{url}/classify", files={"image": ("a.png", photo)}, timeout=60)
        assert answer.status_code == 200, answer.text
    [plan] = plans(log)
    assert (plan["role"], plan["cpus"], plan["runtime"], plan["decode"]) == ("in-process", 1, 1, 5)
    blas = [p for p in plan["pools"] if p["user_api"] == "blas"]
    assert blas, plan["pools"]  # numpy's OpenBLAS is loaded, and held to one thread
    assert all(p["num_threads"] == 1 for p in plan["pools"]), plan["pools"]


@pytest.mark.slow
def test_plan_in_force_in_the_engine_and_its_front(split) -> None:
    [engine] = plans(split["engine_log"])
    assert (engine["role"], engine["runtime"]) == ("engine", usable_cpus())
    assert all(p["num_threads"] == 1 for p in engine["pools"]), engine["pools"]
    [front] = plans(Path(split["engine_log"]).parents[1] / "front-home" / "front.log")
    assert (front["role"], front["runtime"]) == ("front", 0)
