"""BentoML's own clients, and BentoML's CORS settings, on every route of a real server with a token.

Each client call is answered as the same request sent as curl sends it (raw form values): same status
and body, ``timing`` aside; an error raises with the same status and body.
"""

import asyncio
import json

import bentoml
import httpx
import pytest
from bentoml.exceptions import BentoMLException

from tests.conftest import ROOT
from tests.server import DEFAULT, import_models, serve

pytestmark = pytest.mark.slow

STAR = ROOT / "docs" / "star.png"
TOKEN = "client-test-token"
ORIGIN = "https://demo.example"
INT8 = "shapes-resnet10-int8"
CALLS = [  # (API, parameters besides the image, status)
    ("classify", {}, 200),
    ("classify", {"top_k": 2}, 200),
    ("classify", {"model": INT8}, 200),
    ("classify", {"policy": "crop"}, 200),
    ("classify", {"top_k": 3, "model": INT8, "policy": "full"}, 200),
    ("classify_batch", {"top_k": 1, "policy": "crop"}, 200),
    ("explain", {}, 200),
    ("explain", {"class_index": 1}, 200),
    ("explain", {"class_index": 2, "include_map": True, "top_k": 2, "model": INT8, "policy": "crop"}, 200),
    ("embed", {}, 200),
    ("embed", {"normalize": False, "model": INT8, "policy": "crop"}, 200),
    ("classify", {"model": "nope"}, 404),
    ("classify", {"policy": "zoom"}, 400),
    ("classify", {"top_k": 99}, 400),
    ("explain", {"class_index": 99}, 400),
]
CORS = {
    "enabled": True,
    "access_control_allow_origins": [ORIGIN],
    "access_control_allow_methods": ["GET", "POST"],
    "access_control_allow_headers": ["Authorization", "Content-Type", "Inference-Header-Content-Length"],
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with a token and CORS configured through BentoML's own configuration file."""
    home = tmp_path_factory.mktemp("clients")
    import_models(home, DEFAULT, DEFAULT.with_name(INT8))
    config = home / "bentoml.yaml"
    config.write_text(json.dumps({"services": {"resnet-classifier": {"http": {"cors": CORS}}}}))  # JSON is YAML
    models = f"shapes-resnet10:latest,{INT8}:latest"
    env = {"RESNET_MODELS": models, "RESNET_API_TOKEN": TOKEN, "BENTOML_CONFIG": str(config)}
    with serve(home, home / "server.log", **env) as url:
        yield url


def without_timing(body: object) -> object:
    if isinstance(body, dict):
        return {k: without_timing(v) for k, v in body.items() if k != "timing"}
    if isinstance(body, list):
        return [without_timing(v) for v in body]
    return body


def arguments(api: str, params: dict) -> dict:
    return {"images": [STAR, STAR]} | params if api == "classify_batch" else {"image": STAR} | params


def as_curl(url: str, api: str, params: dict) -> httpx.Response:
    """``curl -F image=@star.png -F top_k=2 ...``: every value as its plain text."""
    files = [("images" if api == "classify_batch" else "image", ("star.png", STAR.read_bytes(), "image/png"))]
    files *= 2 if api == "classify_batch" else 1
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    return httpx.post(f"{url}/{api}", files=files, data=data, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


def outcome(call) -> tuple[int, object]:
    """(status, body) of a client call: its answer, or the error it raised."""
    try:
        answer = call()
    except BentoMLException as exc:
        return int(exc.error_code), json.loads(exc.message)
    return 200, json.loads(json.dumps(answer, default=lambda o: o.model_dump(mode="json")))


@pytest.mark.parametrize(("api", "params", "status"), CALLS)
def test_sync_client_answers_as_curl(guarded, api: str, params: dict, status: int) -> None:
    expected = as_curl(guarded, api, params)
    assert expected.status_code == status, expected.text
    with bentoml.SyncHTTPClient(guarded, token=TOKEN) as client:
        got = outcome(lambda: getattr(client, api)(**arguments(api, params)))
    assert got[0] == status and without_timing(got[1]) == without_timing(expected.json())


def test_async_client_answers_as_curl(guarded) -> None:
    async def every_call() -> list[tuple[int, object]]:
        async with bentoml.AsyncHTTPClient(guarded, token=TOKEN) as client:
            found = []
            for api, params, _ in CALLS:
                try:
                    found.append((200, await getattr(client, api)(**arguments(api, params))))
                except BentoMLException as exc:
                    found.append((int(exc.error_code), json.loads(exc.message)))
            return found

    for (api, params, status), (got, body) in zip(CALLS, asyncio.run(every_call()), strict=True):
        expected = as_curl(guarded, api, params)
        assert got == expected.status_code == status, (api, params, body)
        assert without_timing(body) == without_timing(expected.json()), (api, params)


def test_clients_list_the_models_and_need_the_token(guarded) -> None:
    served = httpx.get(f"{guarded}/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    with bentoml.SyncHTTPClient(guarded, token=TOKEN) as client:
        assert client.models() == served and [m["name"] for m in served] == ["shapes-resnet10", INT8]
    with pytest.raises(BentoMLException, match="schema"):  # BentoML's clients read /schema.json first
        bentoml.SyncHTTPClient(guarded, token="wrong", server_ready_timeout=0)
    assert httpx.get(f"{guarded}/schema.json", headers={"Authorization": "Bearer wrong"}).status_code == 401


def preflight(url: str, path: str) -> httpx.Response:
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    headers = {"Origin": ORIGIN, **asks}
    return httpx.options(f"{url}{path}", headers=headers, timeout=30)


FAST_ROUTES = ["/classify", "/classify_batch", "/v2/models/shapes-resnet10-image/infer"]


@pytest.mark.parametrize("path", FAST_ROUTES)
def test_cors_on_every_route_with_a_token(guarded, path: str) -> None:
    answer = preflight(guarded, path)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN, "no token needed"
    body = {"files": [("images" if "batch" in path else "image", ("s.png", STAR.read_bytes(), "image/png"))]}
    if path.startswith("/v2"):
        body = {"json": {"inputs": []}}  # refused (400): CORS headers on refusals too
    for token, status in ((TOKEN, None), ("", 401)):
        headers = {"Origin": ORIGIN, **({"Authorization": f"Bearer {token}"} if token else {})}
        r = httpx.post(f"{guarded}{path}", headers=headers, timeout=30, **body)
        assert r.status_code == (status or r.status_code) and r.headers["access-control-allow-origin"] == ORIGIN
        assert r.headers["vary"] == "Origin", "one Vary, from one CORS layer"
    other = httpx.post(f"{guarded}{path}", headers={"Origin": "https://elsewhere.example"}, timeout=30)
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("path", [*FAST_ROUTES, "/models"])
def test_no_cors_headers_when_cors_is_off(url, path: str) -> None:
    assert "access-control-allow-origin" not in preflight(url, path).headers
    r = httpx.post(f"{url}{path}", headers={"Origin": ORIGIN}, files={"image": ("s.png", STAR.read_bytes())})
    assert r.status_code < 500 and "access-control-allow-origin" not in r.headers


def test_bentoml_route_gets_cors_once(guarded) -> None:
    r = httpx.get(f"{guarded}/schema.json", headers={"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN and r.headers["vary"] == "Origin"
