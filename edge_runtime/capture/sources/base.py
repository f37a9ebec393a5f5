"""The Source seam: something that yields frames, picked by URI.

    source = open_source("rtsp://cam.local/stream")
    frame = source.read()      # a BGR uint8 array, or None when no frame came in time
    source.close()

A timeout is a value (None), not an exception. SourceEnded means the stream finished for
good (a file or folder without --loop); SourceError means the source failed and should be
reopened.

Each module of this package that opens sources has a `KINDS` table from scheme to
`SourceKind`; `open_source` finds them, so a new kind of source is one new file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ...errors import EdgeRuntimeError

DEFAULT_READ_TIMEOUT_S = 5.0


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


@dataclass(frozen=True)
class SourceOptions:
    loop: bool = False  # files and folders: start again at the end
    realtime: bool = False  # files: paced at their own frame rate (frames may be dropped); still end
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S  # a read waits this long before it returns None


@dataclass(frozen=True)
class SourceKind:
    open: Callable[[str, SourceOptions], Source]
    # Checked once at start-up: a mistake that retrying cannot fix (a file that does not exist)
    check: Callable[[str], None] | None = None
