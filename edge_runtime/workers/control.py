"""What the server tells a worker on its control pipe: stop, or swap a published name to a
version of the model store. A small versioned JSON object, parsed strictly:

    control.send_bytes(STOP)
    control.send_bytes(encode_swap(ModelRef("shelf", "models/shelf/v4", 4)))
    message = parse(data, store_root)   # None for stop, else the ModelRef to load

Anything else (not JSON, too long, keys or types not these, a version folder that is not
NAME/vN of the store) is a ControlError: the worker logs it in one line and goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeRuntimeError
from ..publish.config import NAME

STOP = b"stop"
VERSION = 1  # of the message format
MAX_BYTES = 4096
MAX_MODEL_VERSION = 2**31 - 1
_KEYS = {"v", "swap", "path", "version"}


class ControlError(EdgeRuntimeError):
    """A control message a worker does not understand; it is ignored."""


@dataclass(frozen=True)
class ModelRef:
    """A published name at one version: the folder a worker loads. `version` None: the
    model named on the command line, not from the store."""

    name: str
    path: str
    version: int | None = None


def encode_swap(ref: ModelRef) -> bytes:
    return json.dumps({"v": VERSION, "swap": ref.name, "path": ref.path, "version": ref.version}).encode()


def parse(data: bytes, store: Path) -> ModelRef | None:
    """None for STOP, the version to swap in, or ControlError with the reason."""
    if data == STOP:
        return None
    if len(data) > MAX_BYTES:
        raise ControlError(f"a control message of {len(data)} bytes (at most {MAX_BYTES})")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise ControlError("a control message that is not JSON") from None
    if not isinstance(value, dict) or set(value) != _KEYS:
        raise ControlError(f"a control message without exactly the keys {', '.join(sorted(_KEYS))}")
    if type(value["v"]) is not int or value["v"] != VERSION:
        raise ControlError(f"control message format {str(value['v'])[:16]!r} is not known (this worker reads "
                           f"{VERSION})")
    name, version, path = value["swap"], value["version"], value["path"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ControlError("a swap for something that is not a published name")
    if type(version) is not int or not 1 <= version <= MAX_MODEL_VERSION:
        raise ControlError(f"a swap of {name} to a version that is not a positive number")
    expected = store / name / f"v{version}"
    if not isinstance(path, str) or "\0" in path or len(path) > MAX_BYTES:
        raise ControlError(f"a swap of {name} v{version} without a folder")
    if expected.is_symlink() or Path(path).resolve() != expected.resolve():
        raise ControlError(f"a swap of {name} v{version} to a folder that is not {name}/v{version} in the "
                           "model store")
    return ModelRef(name, str(expected), version)
