"""multipart/form-data parsed once, in memory, and checked against a route's fields.

BentoML's own parser writes every upload to a temporary file, answers 500 to an unknown file
field and treats a text ``image`` field as a URL to download; this one does none of that.
"""

import json
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import ApiError

MAX_HEADER_BYTES = 4096  # one part header line: a 5,000-character filename is refused


class FormError(ApiError):
    """The body is not the form the route takes: 400 with ``code`` and the message."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(400, code, detail)


@dataclass(frozen=True)
class Fields:
    """One route's form: the file fields (images) and the plain ones (parameters)."""

    files: frozenset[str]
    plain: frozenset[str]


@dataclass
class Form:
    files: dict[str, list[bytes]] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)  # the first value of each plain field, decoded


def _parts(body: bytes, boundary: bytes, max_parts: int) -> list[tuple[dict[bytes, bytes], bytearray]]:
    """(Content-Disposition options, data) of every part; FormError if it is not well-formed multipart."""
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header = [bytearray(), bytearray()]  # name, value of the header being read
    headers: dict[bytes, bytes] = {}

    def part_begin() -> None:
        if len(parts) >= max_parts:
            raise FormError("bad_form", f"more than {max_parts} form fields")
        headers.clear()
        parts.append(({}, bytearray()))

    def header_end() -> None:
        headers[bytes(header[0]).lower()] = bytes(header[1])
        header[0].clear(), header[1].clear()

    def headers_done() -> None:
        kind, options = parse_options_header(headers.get(b"content-disposition", b""))
        if kind != b"form-data" or b"name" not in options:
            raise FormError("bad_form", "a part without a Content-Disposition form-data name")
        parts[-1][0].update(options)

    callbacks = {
        "on_part_begin": part_begin,
        "on_header_field": lambda d, s, e: header[0].extend(d[s:e]),
        "on_header_value": lambda d, s, e: header[1].extend(d[s:e]),
        "on_header_end": header_end,
        "on_headers_finished": headers_done,
        "on_part_data": lambda d, s, e: parts[-1][1].extend(d[s:e]),
    }
    parser = MultipartParser(boundary, callbacks, max_header_size=MAX_HEADER_BYTES)
    try:
        parser.write(body)
        parser.finalize()
    except FormError:
        raise
    except Exception as exc:
        raise FormError("bad_form", f"the multipart body could not be parsed: {str(exc)[:200]}") from None
    return parts


def _value(text: str) -> object:
    """A plain value as BentoML's own server reads it: JSON where it is JSON (its clients send every value
    JSON-encoded), the raw string otherwise (``curl -F policy=crop``)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def parse(content_type: str, body: bytes, fields: Fields, max_parts: int = 64) -> Form:
    """The route's form from ``body``: unknown fields, text in a file field or a file in a plain field are refused."""
    need = f"multipart/form-data with a file field {' or '.join(sorted(fields.files))}"
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise FormError("bad_request", f"send {need}")
    form = Form()
    for disposition, data in _parts(body, options[b"boundary"], max_parts):
        name = disposition[b"name"].decode("utf-8", "replace")
        is_file = b"filename" in disposition
        if name in fields.files:
            if not is_file:
                raise FormError("bad_field", f"{name} must be a file upload, not text")
            form.files.setdefault(name, []).append(bytes(data))
        elif name in fields.plain:
            if is_file:
                raise FormError("bad_field", f"{name} must be a plain form value, not a file")
            form.values.setdefault(name, _value(data.decode("utf-8", "replace")))
        else:
            allowed = ", ".join(sorted(fields.files | fields.plain))
            raise FormError("unknown_field", f"unknown field {name[:200]}; allowed: {allowed}")
    if not form.files:
        raise FormError("missing_image", f"send {need}")
    return form
