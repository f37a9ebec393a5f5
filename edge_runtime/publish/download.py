"""Download what a description names, verify it and hand it to the publisher: the one
download path of pulled sources (pull.py) and the module twin (iotedge.py).

    downloader = Downloader.from_config(settings.models, publisher)
    downloader.deliver("twin:shelf", description, origin="module twin")   # "published"
    downloader.recover()                                                   # at start

    models/.downloads/
      state.json                      per key: etag, published, pending (a description), failed
      shelf-9f86d081884c7d65.part     a download under way
      shelf-9f86d081884c7d65.zip      downloaded and verified, not yet published
      shelf-9f86d081884c7d65.sig      its signature

Free disk space is checked first (the rest of the download, the store's copy of it and a
margin). The file is fetched to `.part`, resumed with `Range` after a cut link (a 206
appends; a 200 starts again from zero; a 416 or a Content-Range that does not fit starts
again without Range); never more than `size` bytes are written; size and SHA-256 are
verified, the file fsynced and renamed to `.zip`, the signature fetched; only then is the
publisher called. On success the files go; a hash mismatch removes them. A failure of the
bytes (hash, size, the publisher's refusal) is not tried again within `retry_after_s`; a
download only cut keeps its bytes and is resumed.

Every request has one deadline, `timeout_s`, for connecting and the whole answer (the
Deadline of forwarders/webhook.py), so a server that drips a byte a second cannot hold a
download. An attempt cut by it, or by the link, goes on at once when it brought at least
RESUME_AT_ONCE_BYTES, else at the next poll. At most 3 redirects, http and https only;
bodies are taken as sent (Accept-Encoding: identity).

After kill -9 anywhere the device serves its old model: the publisher was never called (or
was, and is crash-safe itself). `recover()` at the next start publishes a verified download
that was waiting, keeps a `.part` still pending for the next poll to resume (or drop, if its
source now describes something else), and removes everything else. Killed between the
publisher's success and the state write, a model is published once more at the next start,
which changes nothing served. state.json is replaced atomically; a damaged one costs at most
one download again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests
from pydantic import ValidationError
from urllib3.exceptions import HTTPError as Urllib3Error

from .. import __version__
from ..capture.sources.uri import redact
from ..errors import EdgeRuntimeError, PullError
from ..forwarders.webhook import Deadline, DeadlineAdapter
from ..model.hashing import file_sha256
from ..paths import fsync_dir
from .config import ModelsConfig
from .description import MB, Description
from .update import Publisher, Update

log = logging.getLogger(__name__)
MAX_SIGNATURE_BYTES = 1 << 20
MAX_STATE_BYTES = 4 << 20
MAX_REDIRECTS = 3
DISK_MARGIN_BYTES = 64 << 20  # left free on the disk after the download and the store's copy of it
RESUME_AT_ONCE_BYTES = 1 << 20  # an attempt cut after this many new bytes goes on at once
CHUNK = 1 << 16
DOWNLOADS = ".downloads"
STATE = "state.json"
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- HTTP ------------------------------------------------------------------------------------


class Http:
    """requests with one deadline over each whole request (connect, redirects, the body),
    at most MAX_REDIRECTS redirects and those to http or https only, bodies as sent. One
    request at a time: the puller and the module twin share it."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self.session = session or requests.Session()
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, DeadlineAdapter())
        self.session.max_redirects = MAX_REDIRECTS
        self.session.headers["User-Agent"] = f"edge-runtime/{__version__}"
        self.deadline = Deadline()
        self._lock = threading.Lock()
        self.closed = False

    @contextlib.contextmanager
    def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Iterator[requests.Response]:
        """The answer to a GET, its body still to read (read_body), within one deadline; a
        PullError in one line for anything that goes wrong on the way."""
        where = redact(url)
        with self._lock:
            if self.closed:
                raise PullError(f"GET {where}: stopping")
            try:
                with self.deadline.within(timeout_s), self.session.get(
                        url, headers={**headers, "Accept-Encoding": "identity"}, timeout=timeout_s, stream=True,
                        allow_redirects=True) as response:
                    yield response
            except requests.TooManyRedirects:
                raise PullError(f"GET {where}: more than {MAX_REDIRECTS} redirects") from None
            except requests.exceptions.InvalidSchema:
                raise PullError(f"GET {where}: redirected to a URL that is not http or https") from None
            except (PullError, requests.RequestException, Urllib3Error, OSError) as exc:
                if self.closed:
                    raise PullError(f"GET {where}: cut short, stopping") from exc
                if self.deadline.expired:
                    raise PullError(f"GET {where}: no complete answer within {timeout_s:g} s") from exc
                if isinstance(exc, PullError):
                    raise
                raise PullError(f"GET {where}: {type(exc).__name__}") from exc
            if self.deadline.expired:  # the socket was cut under a read that then ended quietly
                raise PullError(f"GET {where}: no complete answer within {timeout_s:g} s")

    def close(self) -> None:
        """Cut the request in flight; no more requests after this."""
        self.closed = True
        self.deadline.close()
        self.session.close()


def read_body(response: requests.Response, limit: int, write: Callable[[bytes], Any] | None = None) -> bytes | bool:
    """Up to `limit` bytes of the body: returned, or handed to `write` chunk by chunk (then
    True when the server had more than `limit` to send). With no `write`, a body over
    `limit` comes back `limit + 1` bytes long."""
    got, parts = 0, []
    while got <= limit:
        chunk = response.raw.read1(min(CHUNK, limit + 1 - got), decode_content=False)  # what has come
        if not chunk:
            break
        if write is not None and got + len(chunk) > limit:
            write(chunk[:limit - got])
            return True
        got += len(chunk)
        if write is None:
            parts.append(chunk)
        else:
            write(chunk)
    return b"".join(parts) if write is None else False


def status_error(response: requests.Response, where: str) -> PullError:
    return PullError(f"GET {where}: HTTP {response.status_code}")


# ---- what is remembered ---------------------------------------------------------------------


class DownloadState:
    """`.downloads/state.json`: per source key, what was last published, what is being
    fetched, the last failure and the ETag. Replaced atomically on every change; a damaged
    one is set aside (costing at most one download again), never a reason to stop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
            data = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else None
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            data = None
        if not (isinstance(data, dict) and all(isinstance(v, dict) for v in data.values())):
            log.warning("%s is damaged; starting afresh (a model may be downloaded once more)", self.path)
            return {}
        return data

    def get(self, key: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._data.get(key, {}))

    def sources(self) -> list[str]:
        with self._lock:
            return list(self._data)

    def update(self, key: str, **fields: Any) -> None:
        """Set fields of `key`'s entry; None removes a field."""
        with self._lock:
            entry = {k: v for k, v in {**self._data.get(key, {}), **fields}.items() if v is not None}
            self._data[key] = entry
            tmp = self.path.with_name(f".{STATE}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)


# ---- download, verify, publish --------------------------------------------------------------


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port


def _for(url: str | None, headers: Mapping[str, str] | None, origin: str | None) -> dict[str, str]:
    """The headers that may go to `url`: none unless it is on `origin`'s scheme, host and port."""
    same = url is not None and origin is not None and _origin(url) == _origin(origin)
    return dict(headers or {}) if same else {}


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class Downloader:
    """Fetch what a description names, verify it and hand it to the publisher: the one path
    of pulled and module-twin updates. `key` names who asked (a source, a twin entry), so
    each remembers its own published hash and failures.

        downloader = Downloader(Path("models"), publisher, max_bytes=512 * MB)
        downloader.deliver("twin:shelf", description, origin="module twin")   # "published"
    """

    def __init__(self, root: Path, publisher: Publisher, max_bytes: int, http: Http | None = None,
                 disk_free: Callable[[Path], int] = _disk_free) -> None:
        self.folder = Path(root) / DOWNLOADS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.publisher, self.max_bytes = publisher, max_bytes
        self.http = http or Http()
        self.disk_free = disk_free
        self.state = DownloadState(self.folder / STATE)

    @classmethod
    def from_config(cls, models: ModelsConfig, publisher: Publisher) -> Downloader:
        return cls(models.path, publisher, models.max_download_mb * MB)

    def path(self, desc: Description, suffix: str) -> Path:
        return self.folder / f"{desc.stem}{suffix}"

    def deliver(self, key: str, desc: Description, *, origin: str, source: str = "pull",
                headers: Mapping[str, str] | None = None, headers_origin: str | None = None,
                timeout_s: float = 30.0, retry_after_s: float = 300.0) -> str:
        """"unchanged" when `desc` is what `key` last published, "published" once the
        publisher has taken it; else a PullError (or the publisher's own error) in one line.
        A description that failed less than `retry_after_s` ago is not tried again; one
        whose download was only cut is (the bytes so far are kept). `headers` (a secret)
        go only to URLs on the origin of `headers_origin`, the URL they were meant for."""
        if desc.name is None:
            raise PullError(f"{origin}: the description names no model (give the source a name)")
        entry = self.state.get(key)
        if entry.get("published") == desc.sha256:
            return "unchanged"
        failed = entry.get("failed") or {}
        if failed.get("sha256") == desc.sha256 and time.time() - float(failed.get("time", 0)) < retry_after_s:
            raise PullError(f"{desc.name} {desc.version}: {failed.get('error')} (not tried again before "
                            f"{retry_after_s:g} s have passed)")
        self._discard(entry.get("pending"), keep=desc)
        self.state.update(key, pending={"description": desc.to_json(), "origin": origin, "source": source})
        final = self.path(desc, ".zip")
        if _size(final) != desc.size:
            self._download(key, desc, _for(desc.url, headers, headers_origin), timeout_s)
        self._verify(key, desc, final)
        signature = self._signature(desc, _for(desc.signature_url, headers, headers_origin), timeout_s)
        self._publish(key, desc, final, signature, origin, source)
        return "published"

    def _download(self, key: str, desc: Description, headers: dict[str, str], timeout_s: float) -> None:
        """`.part` holds desc.size bytes when this returns, renamed to `.zip`; a PullError
        when the link or the deadline cut it (its bytes kept), or the server sent more."""
        part = self.path(desc, ".part")
        if part.is_symlink() or part.is_dir():
            _remove(part)
        while (have := _size(part)) < desc.size:
            free, need = self.disk_free(self.folder), desc.size - have + desc.size + DISK_MARGIN_BYTES
            if free < need:
                raise PullError(f"{desc.name} {desc.version}: {free // MB} MB free on the disk of {self.folder}, "
                                f"{need // MB + 1} MB needed (the download, the store's copy and a margin)")
            try:
                answer = self._attempt(desc, part, have, headers, timeout_s)
            except PullError as exc:
                kept = _size(part)
                if kept - have >= RESUME_AT_ONCE_BYTES and not self.http.closed:
                    continue
                if kept:
                    raise PullError(f"{exc}; {kept} of {desc.size} bytes kept, it resumes from there") from exc
                raise
            if answer == "restart":
                continue
            if answer == "overflow":
                _remove(part)
                raise self._failed(key, desc, f"{redact(desc.url)} sent more than the {desc.size} bytes its "
                                              "description gives; removed")
            if _size(part) < desc.size:
                raise PullError(f"GET {redact(desc.url)}: cut short at {_size(part)} of {desc.size} bytes; it "
                                "resumes from there")
        if _size(part) > desc.size:  # a file of ours never grows past size: something else wrote it
            _remove(part)
            raise PullError(f"{part}: longer than {desc.size} bytes; removed, it downloads again")
        _fsync(part)
        os.replace(part, self.path(desc, ".zip"))
        fsync_dir(self.folder)

    def _attempt(self, desc: Description, part: Path, have: int, headers: dict[str, str], timeout_s: float) -> str:
        """One GET of the rest of the file, appended to `part`: "overflow" when the server had
        more than `size` bytes to send, "restart" after a 416 or a Content-Range that does not
        fit (`part` removed, the next attempt starts from zero), else "". A 206 must continue
        at `have`; a 200 starts again from zero."""
        where = redact(desc.url)
        asked = {**headers, "Range": f"bytes={have}-"} if have else dict(headers)
        with self.http.get(desc.url, asked, timeout_s) as response:
            status = response.status_code
            if have and (status == 416 or (status == 206 and not self._fits(response, have, desc))):
                log.info("%s: the server would not resume at byte %d; starting again", where, have)
                _remove(part)
                return "restart"
            if status == 200:
                have = 0
            elif status != 206 or not have:
                raise status_error(response, where)
            flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if have else os.O_TRUNC)
            with os.fdopen(os.open(part, flags, 0o600), "wb", buffering=0) as f:  # on the disk as it comes

                def write(chunk: bytes) -> None:
                    try:
                        view = memoryview(chunk)
                        while view:  # an unbuffered write may be short
                            view = view[f.write(view) or 0:]
                    except OSError as exc:  # a full disk, say: not the server's fault
                        raise PullError(f"{part}: {exc.strerror or exc}") from None

                return "overflow" if read_body(response, desc.size - have, write) else ""

    @staticmethod
    def _fits(response: requests.Response, have: int, desc: Description) -> bool:
        match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        return bool(match and int(match[1]) == have and int(match[2]) == desc.size - 1
                    and match[3] in ("*", str(desc.size)))

    def _verify(self, key: str, desc: Description, final: Path) -> None:
        actual = file_sha256(final, max_bytes=desc.size)
        if actual != desc.sha256:
            _remove(final)
            raise self._failed(key, desc, f"{redact(desc.url)}: its SHA-256 {actual[:16]}... is not the "
                                          f"description's {desc.sha256[:16]}...; removed")

    def _signature(self, desc: Description, headers: dict[str, str], timeout_s: float) -> Path | None:
        if desc.signature_url is None:
            return None
        path = self.path(desc, ".sig")
        if _size(path):
            return path
        where = redact(desc.signature_url)
        with self.http.get(desc.signature_url, headers, timeout_s) as response:
            if response.status_code != 200:
                raise status_error(response, where)
            body = read_body(response, MAX_SIGNATURE_BYTES)
        assert isinstance(body, bytes)
        if len(body) > MAX_SIGNATURE_BYTES or not body:
            raise PullError(f"GET {where}: a signature must be 1 byte to {MAX_SIGNATURE_BYTES // MB} MB")
        tmp = self.path(desc, ".sig.part")
        _remove(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def _publish(self, key: str, desc: Description, final: Path, signature: Path | None, origin: str,
                 source: str) -> None:
        assert desc.name is not None
        try:
            self.publisher(Update(final, desc.name, desc.project, signature=signature, source=source, origin=origin,
                                  release=desc.version))
        except EdgeRuntimeError as exc:
            self._remove_files(desc)
            raise self._failed(key, desc, str(exc)) from exc
        self.state.update(key, published=desc.sha256, version=desc.version, pending=None, failed=None)
        self._remove_files(desc)
        log.info("published %s %s from %s", desc.name, desc.version, origin)

    def _failed(self, key: str, desc: Description, error: str) -> PullError:
        self.state.update(key, pending=None, failed={"sha256": desc.sha256, "version": desc.version,
                                                     "error": error, "time": time.time(), "at": _now()})
        return PullError(f"{desc.name} {desc.version}: {error}")

    def _remove_files(self, desc: Description) -> None:
        for suffix in (".part", ".zip", ".sig", ".sig.part"):
            _remove(self.path(desc, suffix))

    def _discard(self, pending: Any, keep: Description) -> None:
        """The files of a download that a newer description replaced."""
        old = self._pending(pending)
        if old is not None and old.stem != keep.stem:
            self._remove_files(old)

    def _pending(self, pending: Any) -> Description | None:
        try:
            return Description.model_validate(pending["description"])
        except (ValidationError, TypeError, KeyError):
            return None

    def recover(self) -> list[str]:
        """At start: publish downloads that were verified but not yet published, keep the
        `.part` files of descriptions still pending (the next poll resumes them, or drops
        them if the source now describes something else), and remove everything else in
        `.downloads/`. The keys published are returned."""
        published, keep = [], {self.folder / STATE}
        for key in self.state.sources():
            pending = self.state.get(key).get("pending") or {}
            desc = self._pending(pending)
            if desc is None or desc.name is None:
                continue
            final, signature = self.path(desc, ".zip"), self.path(desc, ".sig")
            if _size(final) == desc.size and (desc.signature_url is None or _size(signature)):
                try:
                    self._verify(key, desc, final)
                    self._publish(key, desc, final, signature if desc.signature_url else None,
                                  str(pending.get("origin", "")), str(pending.get("source", "pull")))
                    published.append(key)
                except EdgeRuntimeError as exc:
                    log.warning("%s", exc)
                continue
            keep.update(self.path(desc, suffix) for suffix in (".part", ".zip", ".sig"))
        for path in self.folder.iterdir():
            if path not in keep:
                log.info("removing %s, left by an earlier run", path.name)
                _remove(path)
        return published
