"""The newest frames of each camera in shared memory: a worker writes, the server reads.

    ring = FrameRing("edgert_4242_0_1_")            # in the worker
    ref = ring.put("door", seq=17, image=frame)     # a FrameRef: segment, slot offset, shape
    ...                                             # ref travels in the result message
    frames = FrameReader()                          # in the server
    image = frames.read("door", ref, seq=17)        # a copy, or None if it was overwritten
    frames.release("edgert_4242_0_1_")              # the worker died: close and unlink its segments

Each camera gets one segment of a few slots; a slot is a header (the sequence number
written, the sequence number consumed) and the pixels. The writer takes slots in turn and
waits (briefly, bounded) until the reader has consumed the slot's previous frame, so a
frame is never overwritten while it is copied; the reader checks the sequence number
before and after its copy anyway and drops a frame that changed under it. A frame that
no longer fits makes a new, larger segment.

Segment names start with `edgert_<server pid>_`, so that a server can remove what a
killed predecessor left behind (`remove_stale`); workers unlink their own segments when
they stop, including when they notice the server is gone, and the server unlinks those of
a worker that died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from .codec import FrameRef

log = logging.getLogger(__name__)
ROOT = "edgert_"
SHM_DIR = Path("/dev/shm")
SLOTS = 3
_SLOT_HEAD = struct.Struct("<QQ")  # written seq, consumed seq
_ALIGN = 64
FREE_WAIT_S = 1.0  # longest a writer waits for the reader before overwriting a slot anyway
_POLL_S = 0.001


def prefix_for(server_pid: int, worker: int, incarnation: int) -> str:
    return f"{ROOT}{server_pid}_{worker}_{incarnation}_"


def _buf(shm: shared_memory.SharedMemory) -> memoryview:
    buf = shm.buf
    assert buf is not None, "segment closed"
    return buf


def _slot_size(nbytes: int) -> int:
    return _SLOT_HEAD.size + -(-nbytes // _ALIGN) * _ALIGN


class _Segment:
    def __init__(self, name: str, nbytes: int, slots: int) -> None:
        self.slot_size = _slot_size(nbytes)
        self.capacity = self.slot_size - _SLOT_HEAD.size
        self.shm = shared_memory.SharedMemory(name, create=True, size=self.slot_size * slots)
        self.slots = slots
        self.next = 0

    def close(self) -> None:
        self.shm.close()
        with contextlib.suppress(FileNotFoundError):
            self.shm.unlink()


class FrameRing:
    """The writer's side, in a worker: one segment per camera."""

    def __init__(self, prefix: str, slots: int = SLOTS, stop: threading.Event | None = None) -> None:
        self.prefix = prefix
        self.slots = slots
        self.stop = stop or threading.Event()
        self.overwritten = 0  # slots reused before the reader took them (a stalled server)
        self._segments: dict[str, _Segment] = {}
        self._names: dict[str, int] = {}  # camera -> its number in segment names
        self._generation = 0

    def put(self, camera_id: str, seq: int, image: np.ndarray) -> FrameRef:
        seg = self._segments.get(camera_id)
        if seg is None or seg.capacity < image.nbytes:
            if seg is not None:
                seg.close()
            self._generation += 1
            number = self._names.setdefault(camera_id, len(self._names))
            seg = _Segment(f"{self.prefix}{number}_{self._generation}", image.nbytes, self.slots)
            self._segments[camera_id] = seg
        slot = seg.next
        seg.next = (slot + 1) % seg.slots
        offset = slot * seg.slot_size
        buf = _buf(seg.shm)
        deadline = time.monotonic() + FREE_WAIT_S
        while True:
            written, consumed = _SLOT_HEAD.unpack_from(buf, offset)
            if written == consumed or self.stop.is_set():
                break
            if time.monotonic() > deadline:
                self.overwritten += 1
                break
            time.sleep(_POLL_S)
        _SLOT_HEAD.pack_into(buf, offset, 0, consumed)  # 0: being written
        target = np.ndarray(image.shape, image.dtype, buffer=buf, offset=offset + _SLOT_HEAD.size)
        target[...] = image
        del target
        _SLOT_HEAD.pack_into(buf, offset, seq, consumed)
        return FrameRef(seg.shm.name, offset, tuple(image.shape), image.dtype.str)

    def names(self) -> list[str]:
        return [seg.shm.name for seg in self._segments.values()]

    def close(self) -> None:
        """Close and unlink every segment."""
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()


class FrameReader:
    """The server's side: copies frames out of the workers' segments."""

    def __init__(self) -> None:
        self._attached: dict[str, shared_memory.SharedMemory] = {}  # camera -> its current segment
        self.missed = 0  # frames gone or changed before they were copied

    def read(self, camera_id: str, ref: FrameRef, seq: int) -> np.ndarray | None:
        shm = self._attached.get(camera_id)
        if shm is None or shm.name.lstrip("/") != ref.segment.lstrip("/"):
            if shm is not None:
                shm.close()
                del self._attached[camera_id]
            try:
                shm = shared_memory.SharedMemory(ref.segment)
            except FileNotFoundError:
                self.missed += 1
                return None
            self._attached[camera_id] = shm
        dtype = np.dtype(ref.dtype)
        offset = ref.offset
        if offset + _SLOT_HEAD.size + int(np.prod(ref.shape)) * dtype.itemsize > shm.size:
            self.missed += 1
            return None
        buf = _buf(shm)
        written, _ = _SLOT_HEAD.unpack_from(buf, offset)
        if written != seq:
            self.missed += 1
            return None
        image: np.ndarray = np.ndarray(ref.shape, dtype, buffer=buf, offset=offset + _SLOT_HEAD.size).copy()
        written, _ = _SLOT_HEAD.unpack_from(buf, offset)
        if written != seq:
            self.missed += 1
            return None
        _SLOT_HEAD.pack_into(buf, offset, seq, seq)
        return image

    def release(self, prefix: str) -> None:
        """Close and unlink every segment under `prefix`: its worker is gone."""
        for camera_id, shm in list(self._attached.items()):
            if shm.name.lstrip("/").startswith(prefix):
                shm.close()
                del self._attached[camera_id]
        remove_segments(lambda name: name.startswith(prefix))

    def close(self) -> None:
        for shm in self._attached.values():
            shm.close()
        self._attached.clear()


def remove_segments(match: Callable[[str], bool]) -> list[str]:
    """Unlink the segments in /dev/shm whose name `match(name)` accepts; returns their names."""
    if not SHM_DIR.is_dir():
        return []
    removed = []
    for path in SHM_DIR.glob(f"{ROOT}*"):
        if match(path.name):
            with contextlib.suppress(FileNotFoundError, ValueError):
                shm = shared_memory.SharedMemory(path.name)
                shm.close()
                shm.unlink()  # through SharedMemory, so the resource tracker forgets it too
                removed.append(path.name)
    return removed


_OWNER = re.compile(rf"^{ROOT}(\d+)_")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Unlink segments left by servers that no longer run (killed before they could clean up)."""
    def stale(name: str) -> bool:
        owner = _OWNER.match(name)
        return owner is not None and int(owner.group(1)) != os.getpid() and not _alive(int(owner.group(1)))

    removed = remove_segments(stale)
    if removed:
        log.info("removed %d shared-memory segments left by a server that was killed", len(removed))
    return removed
