"""Content hashes shared by the runtime and the exporter.

    file_sha1(Path("model.onnx"))  # the manifest's ModelFileSHA1, in lower-case hex
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha1(path: Path) -> str:
    """SHA-1 of a file's bytes, read in 1 MB chunks so large models never sit in memory twice."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
