"""An update to the model store, from wherever it came: the command line, a PUT, the
watched folder, a pulled URL or an IoT Edge module twin. All of them end in one call,

    manager.publish(Update(Path("export.zip"), "shelf", project="2d50...", source="incoming",
                           signature=Path("export.zip.sig")))

so the checks (signature, replay, load, warm-up, verify) are made once, in one order,
whatever delivered the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("cli", "http", "incoming", "pull", "twin", "rollback", "retrain")


@dataclass(frozen=True)
class Update:
    path: Path  # an export zip, folder or .onnx, complete and on the local disk
    name: str  # the published name
    project: str | None = None  # None: keep the name's project (any project for a new name)
    signature: Path | None = None  # a model-signing signature over the export's files
    source: str = "cli"  # one of SOURCES, for the log, the record and /api/models
    origin: str = ""  # where it came from in words: a URL, a file name
    release: str | None = None  # the publisher's own version label (a pulled description's "version")
    eval_dir: Path | None = None  # a labelled folder the new version must do as well on


Publisher = Callable[[Update], Any]  # publishes, or raises an EdgeRuntimeError with a one-line reason
