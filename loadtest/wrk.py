"""A load generator that is not the bottleneck: wrk (C, from Debian) posting real photos as multipart.

    python -m loadtest.wrk URL PHOTO... [--clients 1 8 32 128 256] [--seconds 10] [--threads N]

A Python client (httpx, locust) costs ~1.1 CPU-ms per request, as much as the server's own work on
a small model; wrk cost 0.2 here, and spreads over threads. Each point reports images/s, p50/p99 from wrk's latency
histogram, non-2xx answers and socket errors, and the CPU-ms per request of wrk itself (from
/proc, its own rusage) so the figures can be read as the server's. Photos go round-robin.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

BOUNDARY = "resnet-serve-wrk"
SCRIPT = """
local files, bodies, n = {%(files)s}, {}, 0
for i, path in ipairs(files) do
  local f = assert(io.open(path, "rb")); local data = f:read("*a"); f:close()
  bodies[i] = "--%(boundary)s\\r\\nContent-Disposition: form-data; name=\\"image\\"; filename=\\"x.jpg\\"\\r\\n"
    .. "Content-Type: image/jpeg\\r\\n\\r\\n" .. data .. "\\r\\n%(fields)s--%(boundary)s--\\r\\n"
end
local headers = {["Content-Type"] = "multipart/form-data; boundary=%(boundary)s"%(auth)s}
request = function()
  n = n %% #bodies + 1
  return wrk.format("POST", "%(path)s", headers, bodies[n])
end
done = function(summary, latency, requests)
  local e = summary.errors
  if tallied then tallied() end
  io.write("WRK_JSON " .. string.format('{"requests": %%d, "duration_us": %%d, "non_2xx": %%d, '
    .. '"socket_errors": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# Counts answers by status and the value of one JSON string field (which model version answered, say): wrk hands
# every body to Lua then, so only when asked.
TALLY = """
tally, threads = {}, {}  -- globals: thread:get reads a thread's globals
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body)
  local key = status .. " " .. (body:match('"%(field)s":%%s*"([^"]*)"') or "")
  tally[key] = (tally[key] or 0) + 1
end
tallied = function()
  local parts = {}
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("tally")) do table.insert(parts, string.format("%%q: %%d", key, count)) end
  end
  io.write("WRK_TALLY [{" .. table.concat(parts, "}, {") .. "}]\\n")
end
"""


def binary() -> str:
    found = shutil.which("wrk") or os.environ.get("WRK")
    if not found:
        raise SystemExit("wrk not found: apt-get install wrk (or set WRK to its path)")
    return found


def script(photos: list[Path], path: str, fields: dict[str, str], token: str = "", tally: str = "") -> str:
    """wrk's Lua: every photo read once at start-up, then sent round-robin as a multipart body; answers counted by
    status and the JSON field ``tally`` if given."""
    part = '--{b}\\r\\nContent-Disposition: form-data; name=\\"{k}\\"\\r\\n\\r\\n{v}\\r\\n'
    return SCRIPT % {
        "files": ", ".join(json.dumps(str(p)) for p in photos),
        "boundary": BOUNDARY,
        "fields": "".join(part.format(b=BOUNDARY, k=k, v=v) for k, v in fields.items()),
        "auth": f', ["Authorization"] = "Bearer {token}"' if token else "",
        "path": path,
    } + (TALLY % {"field": tally} if tally else "")


def run(
    url: str,
    photos: list[Path],
    clients: int,
    seconds: float,
    threads: int = 0,
    route: str = "classify",
    token: str = "",
    tally: str = "",
    **fields: str,
) -> dict:
    """One load point: ``clients`` connections for ``seconds``; figures per request, wrk's CPU beside them; with
    ``tally``, the answers counted by "status value" of that JSON field."""
    threads = max(1, min(clients, threads or (os.cpu_count() or 2) // 4))
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script(photos, f"/{route}", fields, token, tally))
        lua.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [
            binary(),
            "-t",
            str(threads),
            "-c",
            str(clients),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "30s",
            "-s",
            lua.name,
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out[-2000:]}")
    w = json.loads(line.removeprefix("WRK_JSON "))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = w["requests"] - w["non_2xx"]
    return _tally(out) | {
        "concurrency": clients,
        "threads": threads,
        "requests": w["requests"],
        "errors": w["non_2xx"],
        "socket_errors": w["socket_errors"],
        "images_per_s": ok / (w["duration_us"] / 1e6),
        "p50_ms": w["p50_us"] / 1e3,
        "p90_ms": w["p90_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "max_ms": w["max_us"] / 1e3,
        "client_cpu_ms": cpu * 1e3 / max(1, w["requests"]),
    }


def _tally(out: str) -> dict:
    line = next((x for x in out.splitlines() if x.startswith("WRK_TALLY ")), None)
    if line is None:
        return {}
    counts: Counter[str] = Counter()
    for part in json.loads(line.removeprefix("WRK_TALLY ")):
        counts.update(part)
    return {"tally": dict(counts)}


def sweep(url: str, photos: list[Path], clients: list[int], seconds: float, **options) -> list[dict]:
    """A warm-up, then one point per client count."""
    run(url, photos, clients[0], min(2.0, seconds), **options)
    return [run(url, photos, c, seconds, **options) for c in clients]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128, 256])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--threads", type=int, default=0, help="wrk threads (default: a quarter of the cores)")
    p.add_argument("--policy", default="crop")
    p.add_argument("--model", default="")
    args = p.parse_args(argv)
    fields = {"policy": args.policy, **({"model": args.model} if args.model else {})}
    rows = sweep(args.url, args.photos, args.clients, args.seconds, threads=args.threads, **fields)
    json.dump(rows, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
