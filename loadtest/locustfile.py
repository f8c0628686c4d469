"""Locust users that POST real images of mixed sizes and formats and check every answer.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:3000

Environment: LOADTEST_IMAGES (folder of photos, default ../shared/images), LOADTEST_SHAPES
(folder of generated ``<label>_<n>.png``: their label is checked, a wrong answer is a failure),
LOADTEST_MODEL (default shapes-resnet10), LOADTEST_POLICY, LOADTEST_SHAPE=step (ramp in steps), and the SLO budgets
LOADTEST_MAX_FAILURE_RATIO (default 0.01), LOADTEST_P95_MS / LOADTEST_P99_MS (defaults 2000 / 5000).
"""

import io
import json
import os
import random
import struct
from pathlib import Path

from locust import HttpUser, LoadTestShape, between, events, task
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path(os.environ.get("LOADTEST_IMAGES", ROOT.parent / "shared" / "images"))
SHAPES = os.environ.get("LOADTEST_SHAPES")
FIELDS = {
    k: v for k, v in (("model", os.environ.get("LOADTEST_MODEL")), ("policy", os.environ.get("LOADTEST_POLICY"))) if v
}


def _variants(path: Path) -> list[tuple[str, bytes, str | None]]:
    """The photo as PNG plus JPEG and WebP re-encodings at other sizes: mixed sizes and formats."""
    img = Image.open(path).convert("RGB")
    out = [(path.name, path.read_bytes(), None)]
    for scale, fmt in ((0.5, "JPEG"), (1.5, "JPEG"), (0.75, "WEBP")):
        buf = io.BytesIO()
        img.resize((max(32, int(img.width * scale)), max(32, int(img.height * scale)))).save(buf, fmt)
        out.append((f"{path.stem}_{scale}.{fmt.lower()}", buf.getvalue(), None))
    return out


def load_corpus() -> list[tuple[str, bytes, str | None]]:
    """(filename, bytes, expected label or None)."""
    corpus = [v for p in sorted(IMAGES.iterdir()) if p.is_file() for v in _variants(p)]
    if SHAPES:
        corpus += [(p.name, p.read_bytes(), p.stem.rsplit("_", 1)[0]) for p in sorted(Path(SHAPES).glob("*.png"))]
    return corpus


CORPUS = load_corpus()
IMAGE_MODEL = f"{os.environ.get('LOADTEST_MODEL', 'shapes-resnet10')}-image"


def v2_request(blobs: list[bytes]) -> tuple[bytes, int]:
    """An Open Inference Protocol request for the image model: the images as one binary BYTES tensor."""
    raw = b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    size = {"binary_data_size": len(raw)}
    images = {"name": "images", "datatype": "BYTES", "shape": [len(blobs)], "parameters": size}
    params = {"top_k": 1, **({"policy": FIELDS["policy"]} if "policy" in FIELDS else {})}
    head = json.dumps({"inputs": [images], "outputs": [{"name": "labels"}], "parameters": params}).encode()
    return head + raw, len(head)


class ClassifierUser(HttpUser):
    """A client of the public API: mostly single classifications, some batches and explanations."""

    wait_time = between(0, 0.05)

    def _check(self, response, expected: list[str | None], key: str = "predictions") -> None:
        if response.status_code != 200:
            response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        body = response.json()
        results = body.get("results", [body])
        if len(results) != len(expected):
            response.failure(f"{len(results)} results for {len(expected)} images")
            return
        for result, label in zip(results, expected, strict=True):
            top = result[key][0]
            if not {"label", "index", "probability"} <= top.keys():
                response.failure(f"malformed prediction {top}")
            elif label is not None and top["label"] != label:
                response.failure(f"wrong answer under load: {top['label']} for a {label}")

    @task(6)
    def classify(self) -> None:
        name, data, label = random.choice(CORPUS)
        with self.client.post("/classify", files={"image": (name, data)}, data=FIELDS, catch_response=True) as r:
            self._check(r, [label])

    @task(1)
    def classify_batch(self) -> None:
        picks = random.sample(CORPUS, k=min(4, len(CORPUS)))
        files = [("images", (name, data)) for name, data, _ in picks]
        with self.client.post("/classify_batch", files=files, data=FIELDS, catch_response=True) as r:
            self._check(r, [label for _, _, label in picks])

    @task(1)
    def explain(self) -> None:
        name, data, label = random.choice(CORPUS)
        with self.client.post("/explain", files={"image": (name, data)}, data=FIELDS, catch_response=True) as r:
            self._check(r, [label])

    @task(1)
    def v2_infer(self) -> None:
        picks = random.sample(CORPUS, k=min(2, len(CORPUS)))
        body, length = v2_request([data for _, data, _ in picks])
        headers = {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}
        url = f"/v2/models/{IMAGE_MODEL}/infer"
        with self.client.post(url, data=body, headers=headers, catch_response=True, name="/v2/.../infer") as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            (labels,) = (o["data"] for o in r.json()["outputs"] if o["name"] == "labels")
            for got, (_, _, want) in zip(labels, picks, strict=True):
                if want is not None and got != want:
                    r.failure(f"wrong answer under load: {got} for a {want}")


if os.environ.get("LOADTEST_SHAPE") == "step":

    class StepLoad(LoadTestShape):
        """Add LOADTEST_STEP_USERS users every LOADTEST_STEP_SECONDS, up to LOADTEST_MAX_USERS."""

        step_users = int(os.environ.get("LOADTEST_STEP_USERS", "4"))
        step_seconds = float(os.environ.get("LOADTEST_STEP_SECONDS", "10"))
        max_users = int(os.environ.get("LOADTEST_MAX_USERS", "16"))

        def tick(self):
            run_time = self.get_run_time()
            step = int(run_time // self.step_seconds) + 1
            if step * self.step_users > self.max_users + self.step_users:
                return None
            return min(step * self.step_users, self.max_users), self.step_users


@events.quitting.add_listener
def check_slo(environment, **_kw) -> None:
    """Exit non-zero when the failure ratio or a p95/p99 latency budget is missed."""
    max_fail = float(os.environ.get("LOADTEST_MAX_FAILURE_RATIO", "0.01"))
    budgets = {
        0.95: float(os.environ.get("LOADTEST_P95_MS", "2000")),
        0.99: float(os.environ.get("LOADTEST_P99_MS", "5000")),
    }
    stats, problems = environment.stats, []
    if stats.total.num_requests == 0:
        problems.append("no requests were made")
    elif stats.total.fail_ratio > max_fail:
        problems.append(f"failure ratio {stats.total.fail_ratio:.2%} > {max_fail:.2%}")
    for entry in stats.entries.values():
        for q, budget in budgets.items():
            value = entry.get_response_time_percentile(q)
            if value and value > budget:
                problems.append(f"{entry.method} {entry.name} p{round(q * 100)} {value:.0f} ms > {budget:.0f} ms")
    for p in problems:
        print(f"SLO missed: {p}")
    if problems:
        environment.process_exit_code = 1
    else:
        print(f"SLO met: {stats.total.num_requests} requests, {stats.total.fail_ratio:.2%} failed")
