"""The multipart routes' fast path: the Guard hands each parsed form straight to the service's method.

BentoML's own route for a ``Path`` parameter writes the upload to a temporary file, parses the form
a second time and validates through pydantic models; measured, it cost more CPU than the model. The
methods stay declared with ``@bentoml.api`` (their OpenAPI schema and BentoML's clients); ``Multipart``
reads their signatures with ``inspect`` and calls them with each upload in memory.
"""

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import ApiError, Reply
from .forms import Fields, Form

Handler = Callable[[Form], Awaitable[Reply]]


class Upload(bytes):
    """An uploaded file kept in memory; it reads like the ``Path`` BentoML's own route would pass."""

    def read_bytes(self) -> bytes:
        return self


@dataclass(frozen=True)
class Route:
    fields: Fields
    handle: Handler


def _route(method: Callable, instance: Callable[[], object]) -> Route:
    hints = typing.get_type_hints(method)
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    many = {p for p in params if hints[p] == list[Path]}
    files = {p for p in params if hints[p] is Path} | many
    adapters = {p: TypeAdapter(hints[p]) for p in params if p not in files}

    async def handle(form: Form) -> Reply:
        kwargs: dict[str, object] = {}
        for name, value in form.values.items():
            try:
                kwargs[name] = adapters[name].validate_python(value)
            except ValidationError as exc:
                raise ApiError(400, "bad_parameter", f"{name}: {exc.errors()[0]['msg']}") from None
        for name, blobs in form.files.items():
            kwargs[name] = [Upload(b) for b in blobs] if name in many else Upload(blobs[0])
        result: BaseModel = await method(instance(), **kwargs)
        return Reply(200, result.model_dump_json().encode())

    return Route(Fields(frozenset(files), frozenset(adapters)), handle)


class Multipart:
    """The routes the fast path serves, ``/<method name>`` as BentoML names them; use as a decorator
    under ``@bentoml.api``. ``instance`` gives the service object the methods are called on."""

    def __init__(self, instance: Callable[[], object]) -> None:
        self.instance = instance
        self.routes: dict[str, Route] = {}

    def __call__(self, method: Callable) -> Callable:
        self.routes[f"/{method.__name__}"] = _route(method, self.instance)
        return method
