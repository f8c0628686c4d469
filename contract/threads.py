"""One thread budget per process: the model runtime, numpy's BLAS, OpenMP and the decode executor share the CPUs
this process may really use (its affinity and cgroup quota, not the node's core count).

Pools that spin on the same cores cost more than either alone: OpenBLAS's threads beside onnxruntime's made a
ResNet-50 call 1.5–2× slower (BENCHMARKS.md). So the model runtime takes the cores and numpy's small products
(out-of-distribution score, heat maps) run on the calling thread. The export's runtime record uses the same plan.
"""

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROLES = ("in-process", "front", "engine")
PLAN_LOGGED = "thread plan in force:"
LIBRARY_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # for libraries loaded later


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """The CPUs the cgroup quota allows this process (the tightest of its cgroup and their parents), or None."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: cpu.max is "QUOTA PERIOD" or "max PERIOD"
            base, name = root / "sys/fs/cgroup", "cpu.max"
        elif "cpu" in controllers.split(","):  # cgroup v1: cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us
            base, name = root / "sys/fs/cgroup" / controllers, "cpu.cfs_quota_us"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            quotas.append(_quota(folder, name))
            if folder == base:
                break
            folder = folder.parent
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _quota(folder: Path, name: str) -> float | None:
    try:
        if name == "cpu.max":
            quota, period = (folder / name).read_text().split()
        else:
            quota, period = (folder / name).read_text().strip(), (folder / "cpu.cfs_period_us").read_text().strip()
    except (OSError, ValueError):
        return None
    return None if quota in ("max", "-1") else int(quota) / int(period)


def usable_cpus(root: Path = Path("/")) -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_quota(root)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


@dataclass(frozen=True)
class ThreadPlan:
    """Threads per pool for one serving process; ``runtime`` is 0 where no model runs (a front of a remote engine)."""

    role: str
    cpus: int  # this process's share of the CPUs it may use
    runtime: int  # onnxruntime's intra-op threads, or OpenVINO's
    blas: int  # numpy's BLAS (OpenBLAS, MKL)
    openmp: int
    decode: int  # the loop's default executor (decoding, file locks, loads): asyncio's rule, on these CPUs

    @classmethod
    def make(cls, role: str, runtime_threads: int = 0, cpus: int | None = None, processes: int = 1) -> "ThreadPlan":
        """The plan for one of ``processes`` alike (a role's workers share the CPUs); ``runtime_threads``
        (RESNET_ORT_THREADS) overrides the runtime's share when set."""
        if role not in ROLES:
            raise ValueError(f"thread plan role {role!r}: expected one of {', '.join(ROLES)}")
        cpus = max(1, (cpus or usable_cpus()) // max(1, processes))
        runtime = 0 if role == "front" else runtime_threads or cpus
        return cls(role, cpus, runtime, blas=1, openmp=1, decode=min(32, cpus + 4))

    def apply(self, log: logging.Logger) -> list[dict]:
        """Put the plan in force for the libraries loaded now and later, and log it with threadpoolctl's report
        of this process (JSON after ``PLAN_LOGGED``, which a test reads back); the report."""
        from threadpoolctl import threadpool_info, threadpool_limits

        for var in LIBRARY_THREADS:
            os.environ[var] = str(self.openmp if var == "OMP_NUM_THREADS" else self.blas)
        threadpool_limits(limits=self.blas, user_api="blas")
        threadpool_limits(limits=self.openmp, user_api="openmp")
        keys = ("user_api", "internal_api", "num_threads")
        pools = [{k: pool[k] for k in keys} for pool in threadpool_info()]
        log.warning("%s %s", PLAN_LOGGED, json.dumps({**asdict(self), "pid": os.getpid(), "pools": pools}))
        return pools

    def executor(self) -> ThreadPoolExecutor:
        """The event loop's default executor (asyncio's would size itself from the node's cores)."""
        return ThreadPoolExecutor(self.decode, thread_name_prefix="decode")
