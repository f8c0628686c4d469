"""The front's client for an engine elsewhere: the Open Inference Protocol with binary tensors, over HTTP.

Anything that speaks the protocol can be the engine: ``python -m service.engine_server``, or Triton
serving the same ONNX (``pixels`` in; ``logits``, ``embedding``, ``features`` out).
"""

import asyncio
import json

import aiohttp
import numpy as np

from . import oip
from .errors import EngineUnavailable
from .inference import Item, group


class RemoteEngine:
    """``infer`` sends one request per (model, shape, outputs) group of items, all at once; the engine batches."""

    def __init__(self, url: str, token: str, timeout_s: float, models: list[str]) -> None:
        self.models, self.url, self.timeout = models, url.rstrip("/"), aiohttp.ClientTimeout(total=timeout_s)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made on first use, inside the server's event loop
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        return self._session

    async def _call(self, method: str, path: str, retry: bool = True, **kw) -> tuple[int, str | None, bytes]:
        """(status, the inference header's length if given, body)."""
        try:
            async with self.session.request(method, f"{self.url}{path}", **kw) as r:
                return r.status, r.headers.get(oip.HEADER), await r.read()
        except aiohttp.ServerDisconnectedError:
            if retry:  # a pooled connection the engine had just closed: once more on a fresh one
                return await self._call(method, path, False, **kw)
            raise EngineUnavailable("the engine closed the connection") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise EngineUnavailable(f"engine unreachable: {exc}") from None
        except TimeoutError:
            raise EngineUnavailable("engine did not answer in time") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _infer_group(self, model: str, pixels: np.ndarray, outputs: tuple[str, ...]) -> list[dict]:
        wanted = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
        body, length = oip.encode({"outputs": wanted}, "inputs", {"pixels": pixels}, {"pixels"})
        headers = {oip.HEADER: str(length), "Content-Type": "application/octet-stream"}
        status, length, data = await self._call("POST", f"/v2/models/{model}/infer", data=body, headers=headers)
        if status == 503:
            raise EngineUnavailable("the engine is over its queue budget")
        if status != 200:
            raise RuntimeError(f"engine answered {status}: {data[:300]!r}")
        reply, tensors = oip.decode(data, length, "outputs")
        params = reply.get("parameters") or {}
        extra = {"infer_ms": float(params.get("model_ms", 0.0)), "batch": int(params.get("batch_size", len(pixels)))}
        return [{o: tensors[o][i] for o in outputs} | extra for i in range(len(pixels))]

    async def infer(self, items: list[Item]) -> list[dict]:
        groups = group(items, lambda item: (item.model, item.pixels.shape, item.outputs))
        calls = [self._infer_group(model, np.stack([items[i].pixels for i in idx]), outputs)
                 for (model, _, outputs), idx in groups.items()]  # fmt: skip
        results: list[dict] = [{} for _ in items]
        for idx, answers in zip(groups.values(), await asyncio.gather(*calls), strict=True):
            for i, answer in zip(idx, answers, strict=True):
                results[i] = answer
        return results

    async def ready(self) -> bool:
        """Every model ready on the engine, asked with the token (a wrong token is not ready)."""
        try:
            statuses = [(await self._call("GET", f"/v2/models/{m}/ready"))[0] for m in self.models]
        except EngineUnavailable:
            return False
        return all(s == 200 for s in statuses)

    async def providers(self) -> dict[str, str]:
        """Each model's execution provider, from its protocol metadata (``remote`` where the engine does not say)."""
        found = {}
        for name in self.models:
            try:
                status, _, data = await self._call("GET", f"/v2/models/{name}")
            except EngineUnavailable:
                status, data = 0, b""
            if status == 200:
                found[name] = (json.loads(data).get("parameters") or {}).get("provider", "remote")
            else:
                found[name] = "engine unreachable"
        return found
