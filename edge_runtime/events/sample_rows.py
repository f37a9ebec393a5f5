"""Samples: frames kept for labelling, within the store's budget (they never push events out).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from ..errors import DiskFullError, StoreError
from .files import MediaFiles
from .records import SAMPLE_COLUMNS, SampleRecord, new_id, samples_of
from .salvage import Damage, RowReader


class SampleRows(MediaFiles):
    def add_sample(self, sampler: str, camera: str, taken_at: float, jpeg: bytes,
                   prediction: dict[str, Any]) -> str | None:
        """Keep a frame for labelling; its id, or None when the budget or the disk refuses it
        (samples never push events out)."""
        if not self.room_for(len(jpeg)):
            self.stats.refused += 1
            return None
        sample_id = new_id(taken_at)
        day = dt.datetime.fromtimestamp(taken_at, dt.timezone.utc).strftime("%Y-%m-%d")
        try:
            self._keep_sample(sample_id, sampler, camera, taken_at, f"samples/{day}/{sample_id}.jpg", jpeg, prediction)
        except DiskFullError:
            return None
        self._wrote()
        return sample_id

    def _keep_sample(self, sample_id: str, sampler: str, camera: str, taken_at: float, name: str, jpeg: bytes,
                     prediction: dict[str, Any]) -> None:
        """The media file, then the row that names it (none if one of that id is there);
        StoreError (DiskFullError) with nothing left behind."""
        try:
            size = self.write_media(name, jpeg)
            with self._transaction("saving a sample") as db:
                added = db.execute("INSERT OR IGNORE INTO samples(id, sampler, camera, taken_at, image, prediction, "
                                   "bytes) VALUES (?,?,?,?,?,?,?)",
                                   (sample_id, sampler, camera, taken_at, name, json.dumps(prediction), size)).rowcount
        except StoreError:
            self._unlink([name])
            raise
        if added:
            self._count_bytes(size)

    def samples(self, since: float | None = None, until: float | None = None) -> list[SampleRecord]:
        rows = self._read_all(
            "SELECT id, sampler, camera, taken_at, image, prediction FROM samples "
            "WHERE taken_at >= ? AND taken_at <= ? ORDER BY taken_at",
            (since if since is not None else float("-inf"), until if until is not None else float("inf")))
        return samples_of(rows)

    def readable_samples(self, damage: Damage, since: float | None = None,
                         until: float | None = None) -> list[SampleRecord]:
        """As `readable_events`, for the samples: what can still be read, oldest first."""
        with self.reader() as db:
            rows = RowReader(db, "samples", SAMPLE_COLUMNS, damage).rows(
                "taken_at >= ? AND taken_at <= ?", (-math.inf if since is None else since,
                                                    math.inf if until is None else until))
        return sorted(samples_of(rows, damage), key=lambda s: (s.taken_at, s.id))
