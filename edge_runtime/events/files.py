"""The store's media files and their byte budget: written to a temporary name, fsynced and
renamed before the row that names them commits; counted against events.store.max_mb.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..paths import fsync_dir
from .db import StoreCore
from .records import DB_NAME, new_id


class MediaFiles(StoreCore):
    def usage_bytes(self) -> int:
        """Media plus the database files: what the budget counts."""
        total = self._media_bytes
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += (self.data_dir / (DB_NAME + suffix)).stat().st_size
        return total

    def _count_bytes(self, delta: int) -> None:
        with self._lock:
            self._media_bytes += delta

    def over_budget(self, extra: int = 0) -> bool:
        """Over max_bytes (what deleting records helps with, unlike a disk full of other files)."""
        return self.usage_bytes() + extra > self.budget.max_bytes

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return 0

    def room_for(self, size: int) -> bool:
        """Whether `size` more bytes fit the budget and the free-space floor."""
        return (self.usage_bytes() + size <= self.budget.max_bytes
                and self.free_bytes() - size >= self.budget.min_free_bytes)

    def media_path(self, relative: str) -> Path:
        """The file a stored media name refers to; StoreError for names that leave media/."""
        root = self.media_dir.resolve()
        path = (root / relative).resolve()
        if not relative or root not in path.parents:
            raise StoreError(f"not a media name: {relative!r}")
        return path

    def write_media(self, name: str, data: bytes) -> int:
        """Write a media file durably (temp name, fsync, rename, fsync folder); its size.
        DiskFullError when there is no room (nothing is left behind)."""
        path = self.media_path(name)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._guard(f"writing {name}", exc)
        return len(data)

    def adopt_media(self, name: str, written: Path) -> int:
        """Move a finished file (e.g. a clip a VideoWriter wrote) into media/ durably."""
        path = self.media_path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(written, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(written, path)
            fsync_dir(path.parent)
            return path.stat().st_size
        except OSError as exc:
            with contextlib.suppress(OSError):
                written.unlink(missing_ok=True)
            self._guard(f"writing {name}", exc)

    def scratch_path(self, suffix: str) -> Path:
        """A temporary file name inside media/ (removed at the next open if left behind)."""
        return self.media_dir / f"{new_id()}.part{suffix}"

    def _media_size(self, names: list[str | None]) -> int:
        total = 0
        for name in names:
            if name:
                with contextlib.suppress(OSError, StoreError):
                    total += self.media_path(name).stat().st_size
        return total

    def _unlink(self, names: list[str | None]) -> None:
        for name in names:
            if name:
                with contextlib.suppress(OSError, StoreError):
                    self.media_path(name).unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """For /readyz details: whether recording works, and the space it has."""
        s = self.stats
        return {"ok": not s.disk_full, "diskFull": s.disk_full, "usedBytes": self.usage_bytes(),
                "budgetBytes": self.budget.max_bytes, "freeBytes": self.free_bytes(),
                "minFreeBytes": self.budget.min_free_bytes, "refused": s.refused, "lastError": s.last_error}
