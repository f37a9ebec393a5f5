"""Content hashes shared by the runtime and the exporter.

    file_sha1(Path("model.onnx"))  # the manifest's ModelFileSHA1, in lower-case hex

The one file hash of the project: bundle verification, the graph cache's key, quantize's
record of its parent and the exporter's manifest all use it (and file_sha256, for pulled
updates, the same loop).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


class TooLarge(ValueError):
    """The file is longer than the `max_bytes` it was hashed with."""


def file_sha1(path: Path, max_bytes: int | None = None) -> str:
    """SHA-1 of a file's bytes, read in 1 MB chunks so large models never sit in memory twice;
    TooLarge once more than `max_bytes` were read (a device or an endless file stops there)."""
    return _file_hash(path, "sha1", max_bytes)


def file_sha256(path: Path, max_bytes: int | None = None) -> str:
    """SHA-256 of a file's bytes, as file_sha1: a pulled update's hash (publish/pull.py)."""
    return _file_hash(path, "sha256", max_bytes)


def _file_hash(path: Path, algorithm: str, max_bytes: int | None) -> str:
    digest, size = hashlib.new(algorithm), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise TooLarge(f"{path}: larger than {max_bytes} bytes")
            digest.update(chunk)
    return digest.hexdigest()
