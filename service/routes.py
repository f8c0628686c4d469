"""The multipart routes' fast path: the Guard hands each parsed form straight to the service's method.

BentoML's own route for a ``Path`` parameter writes the upload to a temporary file, parses the form
a second time and validates through pydantic models; measured here it cost more CPU than the model.
The methods stay declared with ``@bentoml.api`` (their OpenAPI schema and BentoML's clients), and
are called here with each upload in memory.
"""

import typing
from collections.abc import Awaitable, Callable

import bentoml
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from .errors import ApiError
from .forms import Fields, Form

Handler = Callable[[Form], Awaitable[Response]]


class Upload(bytes):
    """An uploaded file kept in memory; it reads like the ``Path`` BentoML's own route would pass."""

    def read_bytes(self) -> bytes:
        return self


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _handler(api) -> tuple[Fields, Handler]:
    spec = api.input_spec.model_fields
    files = frozenset(api.input_spec.multipart_fields)
    many = {name for name in files if typing.get_origin(spec[name].annotation) is list}
    adapters = {name: TypeAdapter(field.annotation) for name, field in spec.items() if name not in files}

    async def handle(form: Form) -> Response:
        kwargs: dict[str, object] = {}
        for name, value in form.values.items():
            try:
                kwargs[name] = adapters[name].validate_python(value)
            except ValidationError as exc:
                return error_response(ApiError(400, "bad_parameter", f"{name}: {exc.errors()[0]['msg']}"))
        for name, blobs in form.files.items():
            kwargs[name] = [Upload(b) for b in blobs] if name in many else Upload(blobs[0])
        try:
            result: BaseModel = await api.func(bentoml.get_current_service(), **kwargs)
        except ApiError as exc:
            return error_response(exc)
        return Response(result.model_dump_json(), media_type="application/json")

    return Fields(files, frozenset(adapters)), handle


def multipart_routes(service) -> dict[str, tuple[Fields, Handler]]:
    """Route path → (its form fields, its handler), for every API of ``service`` that takes files."""
    return {api.route: _handler(api) for api in service.apis.values() if api.input_spec.multipart_fields}
