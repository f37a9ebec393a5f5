"""Read a model's opset imports straight from the protobuf wire format.

Only used to explain why onnxruntime refused a model (the 2018 opset-1 exports), when
no session exists to ask. The `onnx` package would do it, but it is not a runtime
dependency, and a dozen lines of the documented wire format suffice:
https://protobuf.dev/programming-guides/encoding/
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MAX_FIELDS = 100_000  # top-level fields read before giving up (a model has a dozen)
MAX_OPSET_ENTRY = 4096  # bytes in one opset_import entry (a domain name and a version)

_MODEL_OPSET_IMPORT = 8  # ModelProto.opset_import
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2  # OperatorSetIdProto fields


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield number, buf[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _file_varint(f: BinaryIO) -> int:
    result = shift = 0
    while shift < 64:
        byte = f.read(1)
        if not byte:
            raise ValueError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
    raise ValueError("varint too long")


def _opset_entries(f: BinaryIO) -> Iterator[bytes]:
    """The raw opset_import entries of a ModelProto, skipping (not reading) the graph."""
    for _ in range(MAX_FIELDS):
        try:
            key = _file_varint(f)
        except ValueError:
            return  # end of file
        number, wire = key >> 3, key & 7
        if wire == 0:
            _file_varint(f)
        elif wire == 2:
            length = _file_varint(f)
            if number == _MODEL_OPSET_IMPORT and length <= MAX_OPSET_ENTRY:
                yield f.read(length)
            else:
                f.seek(length, 1)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, 1)
        else:
            raise ValueError(f"unsupported wire type {wire}")


def read_opsets(path: Path) -> dict[str, int]:
    """{domain: version} from a model file; empty when it cannot be read.

    Reads only the small fields: the graph, which holds the weights, is skipped over.
    """
    try:
        opsets: dict[str, int] = {}
        with open(path, "rb") as f:
            for value in _opset_entries(f):
                entry = dict(_fields(value))
                domain = entry.get(_OPSET_DOMAIN, b"")
                version = entry.get(_OPSET_VERSION, 0)
                opsets[domain.decode() if isinstance(domain, bytes) else ""] = int(version)
        return opsets
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return {}
