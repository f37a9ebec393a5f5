"""The Source seam: something that yields frames, picked by URI.

    source = open_source("rtsp://cam.local/stream")
    frame = source.read()      # a BGR uint8 array, or None when no frame came in time
    source.close()

A timeout is a value (None), not an exception. SourceEnded means the stream finished
(a file without --loop); SourceError means the source failed and should be reopened.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import EdgeRuntimeError


class SourceError(EdgeRuntimeError):
    """The source cannot be opened or failed while reading."""


class SourceEnded(EdgeRuntimeError):
    """The stream has no more frames."""


@runtime_checkable
class Source(Protocol):
    name: str  # for logs and status: never holds credentials
    live: bool  # frames arrive whether or not they are read (cameras, streams, --realtime files)

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...
