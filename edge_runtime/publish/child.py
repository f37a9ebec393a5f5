"""A command run as a child process at low priority, within limits, its progress read as it goes.

    child = Child(["edge-export", "train", "DATASET", "--progress-lines"], Limits(timeout_s=3600),
                  log=Path("train.log"), on_progress=print)
    child.run()   # returns when it exits 0; TrainingError with one line otherwise

Why a child: the trainer's dependencies (scikit-learn, onnx) and its memory stay out of the
server, and a child that crashes, hangs or fills the disk takes nothing of the server's with
it. Its limits:

- priority: niceness `Limits.nice` and the idle I/O class (`ionice -c 3`, where ionice is
  installed), so the cameras keep their cores;
- a deadline for the whole run, after which its process group is killed;
- `max_output` bytes of stdout and stderr together (kept in `log`): more is killed;
- `max_file` bytes per file it writes (RLIMIT_FSIZE), so it cannot fill the disk;
- it dies with the thread that started it (Linux: PR_SET_PDEATHSIG), so a server killed
  with -9 leaves no training behind.

Progress lines are `progress {"stage": "features", "done": 3, "total": 40}` on stdout
(`edge-export ... --progress-lines` writes them); anything else is only logged. On
failure the error is the last line of its stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import TrainingError

PROGRESS = "progress "
MAX_LINE = 4096  # bytes of one line read at a time; a longer one is read in pieces
MAX_ERROR = 300  # characters of the last stderr line shown as the error
PR_SET_PDEATHSIG = 1
Progress = Callable[[str, int, int], None]


def progress_line(stage: str, done: int, total: int) -> str:
    return PROGRESS + json.dumps({"stage": stage, "done": done, "total": total})


def parse_progress(line: str) -> tuple[str, int, int] | None:
    """(stage, done, total) from a progress line; None for any other line or a malformed one."""
    if not line.startswith(PROGRESS):
        return None
    try:
        body = json.loads(line[len(PROGRESS):])
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    stage, done, total = body.get("stage"), body.get("done"), body.get("total")
    if not (isinstance(stage, str) and 0 < len(stage) <= 64):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (done, total)):
        return None
    assert isinstance(done, int) and isinstance(total, int)
    if total < 1 or done < 0:
        return None
    return stage, min(done, total), total


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 3600.0
    max_output: int = 1 << 20  # bytes of stdout and stderr together
    max_file: int | None = None  # bytes of any one file it writes
    nice: int = 10  # added to the server's own niceness


def _pdeathsig() -> Callable[[], object] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Child:
    def __init__(self, argv: Sequence[str], limits: Limits, log: Path, on_progress: Progress | None = None,
                 env: dict[str, str] | None = None, what: str = "the training") -> None:
        self.argv, self.limits, self.log, self.on_progress = list(argv), limits, log, on_progress
        self.env, self.what = env, what
        self.proc: subprocess.Popen[bytes] | None = None
        self.on_start: Callable[[int], object] | None = None  # told the child's pid
        self._written = 0
        self._over = False
        self.timed_out = False
        self._last_error = ""
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def cancel(self) -> None:
        """Kill it (a server shutting down); run() then raises."""
        self._cancelled.set()
        self._kill()

    def run(self) -> None:
        argv = self.argv
        if (ionice := shutil.which("ionice")) is not None:
            argv = [ionice, "-c", "3", "-t", *argv]  # -t: go on where the idle class cannot be set
        deathsig = _pdeathsig()
        limits = self.limits

        def in_child() -> None:  # between fork and exec: only plain system calls
            os.nice(limits.nice)
            if limits.max_file is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file, limits.max_file))
            if deathsig is not None:
                deathsig()

        self.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log, "wb") as log:
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, env=self.env, start_new_session=True,
                                             preexec_fn=in_child)
            except OSError as exc:
                raise TrainingError(f"{self.what} could not be started: {exc.strerror or exc}") from None
            assert self.proc.stdout is not None and self.proc.stderr is not None
            if self.on_start is not None:
                self.on_start(self.proc.pid)
            readers = [threading.Thread(target=self._read, args=(self.proc.stdout, log, True), daemon=True),
                       threading.Thread(target=self._read, args=(self.proc.stderr, log, False), daemon=True)]
            for r in readers:
                r.start()
            try:
                self.proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                self._kill()
                self.proc.wait()
            for r in readers:
                r.join(5)
        code = self.proc.returncode
        if code == 0 and not self._over:
            return
        raise TrainingError(self._reason(code, self.timed_out, time.monotonic() - started))

    def _reason(self, code: int, timed_out: bool, seconds: float) -> str:
        said = f": {self._last_error}" if self._last_error else ""
        if self._cancelled.is_set():
            return f"{self.what} was stopped (the server is shutting down)"
        if timed_out:
            return f"{self.what} ran past its deadline ({self.limits.timeout_s:g} s) and was stopped"
        if self._over:
            return f"{self.what} wrote more than {self.limits.max_output} bytes of output and was stopped"
        over_budget = f"a file over its disk budget ({(self.limits.max_file or 0) >> 20} MB)"
        if code == -signal.SIGXFSZ:
            return f"{self.what} tried to write {over_budget} and was stopped"
        if self.limits.max_file is not None and os.strerror(errno.EFBIG) in self._last_error:
            return f"{self.what} could not write {over_budget}: {self._last_error}"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return f"{self.what} was killed ({name}) after {seconds:.0f} s{said}"
        return self._last_error or f"{self.what} exited with status {code}"

    def _kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _read(self, stream: IO[bytes], log: IO[bytes], progress: bool) -> None:
        for raw in iter(lambda: stream.readline(MAX_LINE), b""):
            with self._lock:
                self._written += len(raw)
                if self._written > self.limits.max_output:
                    self._over = True
                    self._kill()
                    continue  # drain what is left, keep none of it
                log.write(raw)
            line = raw.decode("utf-8", "replace").rstrip()
            if not progress:
                if line.strip():
                    self._last_error = " ".join(line.split())[:MAX_ERROR]
                continue
            parsed = parse_progress(line)
            if parsed is not None and self.on_progress is not None:
                self.on_progress(*parsed)
