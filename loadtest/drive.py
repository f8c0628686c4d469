"""HTTP load points for `make bench`: real photos, N clients for S seconds, latency and batch figures."""

import asyncio
import io
import os
import shutil
import statistics
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("LOADTEST_IMAGES", ROOT.parent / "shared" / "images"))


def save(folder: Path, images: list[bytes]) -> list[Path]:
    """``images`` written afresh as folder/NNN.jpg, for the tools that read files (wrk, the in-process benches)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, data in enumerate(images):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    return sorted(folder.iterdir())


def photos(sizes=(200, 320, 480, 640, 800, 1000)) -> list[bytes]:
    """Real photos as JPEG, longer side 200–1000 px."""
    out = []
    for path in sorted(PHOTOS.iterdir()):
        img = Image.open(path).convert("RGB")
        for s in sizes:
            scale = s / max(img.size)
            buf = io.BytesIO()
            img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale)))).save(
                buf, "JPEG", quality=90
            )
            out.append(buf.getvalue())
    return out


async def _load(url: str, route: str, images: list[bytes], concurrency: int, seconds: float, fields: dict) -> dict:
    latencies, batches, errors, pixels, parts = [], [], 0, [], {"preprocess_ms": [], "inference_ms": []}
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                data = images[i % len(images)]
                i += concurrency
                t = time.perf_counter()
                try:
                    r = await client.post(f"{url}/{route}", files={"image": ("x.jpg", data, "image/jpeg")}, data=fields)
                except httpx.HTTPError:  # connection refused or reset: a failed request, not a failed run
                    errors += 1
                    continue
                if r.status_code != 200:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - t) * 1e3)
                body = r.json()
                if "timing" in body:
                    batches.append(body["timing"]["batch_size"])
                    for part, values in parts.items():
                        values.append(body["timing"][part])
                    pixels.append(body["inferred_size"][0] * body["inferred_size"][1])

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": q[98],
        "mean_batch": statistics.mean(batches) if batches else 1.0,
        "mpixels_per_s": sum(pixels) / elapsed / 1e6 if pixels else None,
        **{f"{k}_p50": statistics.median(v) if v else None for k, v in parts.items()},
    }


def load(url, route, images, concurrency, seconds, **fields) -> dict:
    # warm-up pass, then the measured one
    asyncio.run(_load(url, route, images, concurrency, min(2.0, seconds), fields))
    return asyncio.run(_load(url, route, images, concurrency, seconds, fields))
