"""Every result as one JSON line, in files that rotate by size under a total cap.

    log = JsonlLog(Path("results.jsonl"), max_bytes=64 << 20, files=4)

`results.jsonl` is written until it would pass max_bytes / files, then it becomes
`results.jsonl.1` (the older ones shift up, and the oldest beyond `files` is deleted), so
the log never holds more than about max_bytes. Written with os.write on an O_APPEND
descriptor rather than logging's RotatingFileHandler, so that a short write (full disk) is
seen and counted instead of printed as a traceback.

A full disk fails this sink alone; once space is back, logging resumes and a line cut short
by the failure is terminated first. A last line cut short by a crash (kill -9, power loss)
is removed when the log is opened again, so every line in the files is whole JSON.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import ConfigError
from ..types import FrameResult
from .context import SinkContext

TAIL_CHUNK = 64 * 1024


def repair_tail(path: Path) -> int:
    """Cut a partial last line off `path`; returns the bytes removed (0 if it was whole)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                f.truncate(keep)
                return size - keep
            end = start
        f.truncate(0)
        return size


class JsonlLog:
    def __init__(self, path: Path, project: str = "", iteration: str = "",
                 max_bytes: int = 64 << 20, files: int = 4) -> None:
        self.path = path
        self.project, self.iteration = project, iteration
        self.files = max(1, files)
        self.file_bytes = max(1, max_bytes // self.files)
        self._lock = threading.Lock()
        self._broken = False
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.repaired = repair_tail(path)
            self._fd = self._open()
        except OSError as exc:
            raise ConfigError(f"log.jsonl {path}: {exc.strerror or exc}") from None
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, result: FrameResult) -> None:
        line = result.json_text(self.project, self.iteration) + "\n"
        self.write_line(line.encode())

    def write_line(self, line: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            if self._fd < 0:  # a rotation failed half-way: the next line tries again
                self._fd = self._open()
                self._size = os.fstat(self._fd).st_size
            if self._size and self._size + len(line) > self.file_bytes:
                self._rotate()
            data = (b"\n" if self._broken else b"") + line
            try:
                written = os.write(self._fd, data)
            except OSError:
                self._broken = True
                raise
            self._size += written
            self._broken = written != len(data)
            if self._broken:
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        oldest = self.path.with_name(f"{self.path.name}.{self.files - 1}")
        if self.files == 1:
            self.path.unlink(missing_ok=True)
        else:
            oldest.unlink(missing_ok=True)
            for i in range(self.files - 2, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._broken = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def build(ctx: SinkContext) -> JsonlLog | None:
    cfg = ctx.settings.log
    if cfg.jsonl is None:
        return None
    return JsonlLog(cfg.jsonl, ctx.project, ctx.iteration, max_bytes=cfg.jsonl_max_mb << 20, files=cfg.jsonl_files)
