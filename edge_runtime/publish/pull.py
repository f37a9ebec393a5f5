"""Model updates pulled from a URL: `models.sources[]`, each a URL that serves a small JSON
description of the newest model (description.py).

    downloader = Downloader.from_config(settings.models, publisher)   # shared with the module twin
    puller = Puller.from_config(settings.models, downloader)
    puller.start()                  # recover(), then each source every interval_s, 10 per cent either way
    puller.poll_once(source)        # one poll, synchronous: what the loop calls
    puller.stop()

One poll: GET the description with If-None-Match (a 304 does nothing; the ETag is kept only
once a description was handled, so a failed one is fetched whole again); a source's own
`name` and `project` win over the description's; then download.Downloader fetches, verifies
and publishes it as Update(source="pull"), skipping a hash this source already published.
The headers of a source's headers_file (an Authorization header, a secret: never logged)
go to the description's own origin (scheme, host and port) only, never to a download
elsewhere (a CDN, a blob store).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..capture.sources.uri import redact
from ..errors import ConfigError, EdgeRuntimeError
from ..paths import read_setting_file
from .config import ModelsConfig, SourceConfig
from .description import MAX_DESCRIPTION_BYTES, parse_description
from .download import Downloader, read_body, status_error

log = logging.getLogger(__name__)
MAX_HEADERS_BYTES = 16 * 1024
JITTER = 0.1
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


def read_headers(path: Path) -> dict[str, str]:
    """The 'Header: value' lines of a source's headers_file. A ConfigError names the file and
    the line, never what it holds."""
    what = "models.sources headers_file"
    data = read_setting_file(path, what, MAX_HEADERS_BYTES, secret=True)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not UTF-8 text") from None
    headers = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        value = value.strip()
        if not sep or not HEADER_NAME.fullmatch(name.strip()) or not value or not value.isprintable():
            raise ConfigError(f"{what} {path}: line {number} is not 'Header: value'")
        headers[name.strip()] = value
    return headers


def source_key(source: SourceConfig) -> str:
    """The state's key of a source: its URL's hash, so no token in it is written down."""
    return "source:" + hashlib.sha256(source.url.encode()).hexdigest()[:16]


class Puller:
    """Polls `models.sources[]` on one daemon thread, each source on its own interval."""

    def __init__(self, sources: Sequence[SourceConfig], downloader: Downloader,
                 rng: Callable[[], float] = random.random) -> None:
        self.sources, self.downloader, self.rng = list(sources), downloader, rng
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, models: ModelsConfig, downloader: Downloader) -> Puller:
        """Reads every headers_file once, so a bad one stops start-up in one line."""
        for source in models.sources:
            if source.headers_file is not None:
                read_headers(source.headers_file)
        return cls(models.sources, downloader)

    def poll_once(self, source: SourceConfig) -> str:
        """One poll: "not-modified" (a 304), "unchanged" (the hash last published),
        "published"; a PullError (or the publisher's error) in one line otherwise."""
        where, key = redact(source.url), source_key(source)
        headers = read_headers(source.headers_file) if source.headers_file is not None else {}
        etag = self.downloader.state.get(key).get("etag")
        asked = {**headers, "Accept": "application/json", **({"If-None-Match": etag} if etag else {})}
        with self.downloader.http.get(source.url, asked, source.timeout_s) as response:
            if response.status_code == 304 and etag:
                return "not-modified"
            if response.status_code != 200:
                raise status_error(response, where)
            raw = read_body(response, MAX_DESCRIPTION_BYTES)
            new_etag, final_url = response.headers.get("ETag"), response.url or source.url
        assert isinstance(raw, bytes)
        desc = parse_description(raw, final_url, self.downloader.max_bytes, where)
        desc = desc.model_copy(update={"name": source.name or desc.name, "project": source.project or desc.project})
        outcome = self.downloader.deliver(key, desc, origin=where, headers=headers, headers_origin=source.url,
                                          timeout_s=source.timeout_s,
                                          retry_after_s=source.interval_s)
        self.downloader.state.update(key, etag=new_etag, where=where)
        return outcome

    def start(self) -> None:
        self.downloader.recover()
        self._thread = threading.Thread(target=self._run, name="model-pull", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = [0.0] * len(self.sources)  # each polled at once, then on its interval
        while self.sources and not self._stop.is_set():
            i = min(range(len(due)), key=due.__getitem__)
            wait = due[i] - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            source = self.sources[i]
            try:
                self.poll_once(source)
            except EdgeRuntimeError as exc:
                log.warning("model source %s: %s", redact(source.url), exc)
            except Exception:  # a bug must not end polling for good
                log.exception("model source %s", redact(source.url))
            due[i] = time.monotonic() + source.interval_s * (1 + JITTER * (2 * self.rng() - 1))

    def stop(self, timeout: float = 5.0) -> None:
        """Cut a download in flight (its bytes are kept) and end the thread."""
        self._stop.set()
        self.downloader.http.close()
        if self._thread is not None:
            self._thread.join(timeout)
