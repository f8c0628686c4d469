"""The Open Inference Protocol (KServe v2) REST body, with Triton's binary tensor data extension.

A body is a JSON header, optionally followed by raw tensor bytes whose split is given by each
tensor's ``parameters.binary_data_size``; the header's length travels in the
``Inference-Header-Content-Length`` HTTP header. Everything here is parsed as data: JSON and
fixed-type arrays, never code.
"""

import json
import struct
from collections.abc import Collection
from math import prod

import numpy as np

from ..errors import ApiError

HEADER = "inference-header-content-length"
DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NAMES = {np.dtype(t): name for name, t in DTYPES.items()}


class ProtocolError(ApiError):
    """A body that is not a valid inference request or response: 400 ``{"error": ...}``."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "bad_request", message)


def bytes_array(values: list) -> np.ndarray:
    """An object array of ``bytes`` (nested lists give more dimensions) that numpy does not turn into ``S`` arrays."""
    array = np.empty(np.shape(np.array(values, dtype=object)), dtype=object)
    array[...] = values
    return array


def datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == object else NAMES[array.dtype]


def _bytes_elements(raw: bytes, count: int) -> np.ndarray:
    """BYTES tensors on the wire: each element a 4-byte little-endian length, then its bytes."""
    out, at = [], 0
    for _ in range(count):
        if at + 4 > len(raw):
            raise ProtocolError("BYTES tensor data ends inside an element's length")
        (n,) = struct.unpack_from("<I", raw, at)
        if at + 4 + n > len(raw):
            raise ProtocolError("BYTES tensor data ends inside an element")
        out.append(raw[at + 4 : at + 4 + n])
        at += 4 + n
    if at != len(raw):
        raise ProtocolError("BYTES tensor data is longer than its elements")
    return bytes_array(out)


def check(name: str, kind: object, shape: object) -> None:
    """A tensor's datatype is the protocol's and its shape a list of non-negative integers."""
    if kind not in DTYPES and kind != "BYTES":
        raise ProtocolError(f"tensor {name!r}: unknown datatype {kind!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"tensor {name!r}: shape must be a list of non-negative integers")


def from_bytes(name: str, kind: str, shape: list[int], raw: memoryview | bytes) -> np.ndarray:
    """A tensor from its raw bytes, as the binary extension and gRPC's ``raw_input_contents`` carry it."""
    if kind == "BYTES":
        return _bytes_elements(bytes(raw), prod(shape)).reshape(shape)
    if len(raw) != prod(shape) * np.dtype(DTYPES[kind]).itemsize:
        raise ProtocolError(f"tensor {name!r}: {len(raw)} bytes of binary data for shape {shape} of {kind}")
    return np.frombuffer(raw, DTYPES[kind]).reshape(shape)


def _tensor(spec: object, binary: memoryview, at: int) -> tuple[str, np.ndarray, int]:
    """One tensor of a header (name, array, bytes of the binary section it used)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ProtocolError("each tensor needs a name")
    name, kind, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    check(name, kind, shape)
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"tensor {name!r}: parameters must be a JSON object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or at + size > len(binary):
            raise ProtocolError(f"tensor {name!r}: binary_data_size {size!r} exceeds the binary data sent")
        return name, from_bytes(name, kind, shape, binary[at : at + size]), size
    data = spec.get("data")
    if not isinstance(data, list):
        raise ProtocolError(f"tensor {name!r} has neither data nor binary_data_size")
    try:
        if kind == "BYTES":
            flat = [d.encode() if isinstance(d, str) else None for d in np.ravel(np.array(data, dtype=object))]
            if None in flat:
                raise ValueError
            array = bytes_array(flat)
        else:
            array = np.asarray(data, dtype=DTYPES[kind])
        return name, array.reshape(shape), 0
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(f"tensor {name!r}: data does not fit datatype {kind} and shape {shape}") from None


def decode(body: bytes, header_length: str | None, key: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(the JSON header, its ``key`` tensors by name) of a request (``inputs``) or response (``outputs``)."""
    try:
        n = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER} must be an integer") from None
    if not 0 < n <= len(body):
        raise ProtocolError(f"{HEADER} {n} does not fit a body of {len(body)} bytes")
    try:
        header = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("the inference header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get(key), list):
        raise ProtocolError(f"the inference header needs a list of {key}")
    binary, at, tensors = memoryview(body)[n:], 0, {}
    for spec in header[key]:
        name, array, used = _tensor(spec, binary, at)
        if name in tensors:
            raise ProtocolError(f"tensor {name!r} appears twice")
        tensors[name], at = array, at + used
    if at != len(binary):
        raise ProtocolError(f"{len(binary) - at} bytes of binary data belong to no tensor")
    return header, tensors


def raw(array: np.ndarray) -> bytes:
    """The tensor's bytes on the wire (BYTES elements each after its 4-byte little-endian length)."""
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(e)) + e for e in (bytes(x) for x in array.ravel()))
    return np.ascontiguousarray(array).tobytes()


def encode(header: dict, key: str, tensors: dict[str, np.ndarray], binary: Collection[str]) -> tuple[bytes, int | None]:
    """(body, JSON header length, or None when all is JSON) with ``tensors`` under ``header[key]``;
    the tensors named in ``binary`` travel as raw bytes after the header."""
    specs, chunks = [], []
    for name, array in tensors.items():
        spec = {"name": name, "datatype": datatype(array), "shape": list(array.shape)}
        if name in binary:
            chunks.append(raw(array))
            spec["parameters"] = {"binary_data_size": len(chunks[-1])}
        elif array.dtype == object:
            spec["data"] = [bytes(x).decode("utf-8", "replace") for x in array.ravel()]
        else:
            spec["data"] = array.ravel().tolist()
        specs.append(spec)
    head = json.dumps({**header, key: specs}, separators=(",", ":")).encode()
    return (head + b"".join(chunks), len(head)) if chunks else (head, None)
