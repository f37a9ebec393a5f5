"""Bring a Custom Vision project's data out, in the layouts `check`, `train` and `evaluate` read.

    client = SdkClient.connect(load_credentials(), limiter=RateLimiter(10))
    summary = Pull(client, Path("shelf-data")).run("shelf", exports=True, untagged=True)

    multiclass    OUT/<tag>/<image id>.<ext>        one folder per tag
    multilabel    OUT/labels.json + OUT/images/
    detection     OUT/annotations.json (COCO, boxes in pixels) + OUT/images/
    every kind    OUT/_negative/ (the Negative tag), OUT/_untagged/ (with untagged=True),
                  OUT/_exports/<iteration>.zip (with exports=True), OUT/project.json
                  (tag ids, settings, iterations and their performance),
                  OUT/_predictions/ + predictions.json (with predictions=True: the images
                  the prediction endpoint stored, with what was predicted, for labelling)

The images are the originals (`original_image_uri`), fetched a few at a time; each is
checked for length and decodability and fetched again when cut. `.pull/state.db`
(SQLite, pull_state.py) gets one row per image written (its id, file and SHA-256), so a
run that stopped goes on without fetching anything twice. Pages are streamed and the
layout files written from the state (pull_layout.py): memory holds one page of records
and the few images in flight, never the project, so a project of 100,000 images (the S0
limit) pulls in the memory of a small one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from edge_runtime.errors import ImageError
from edge_runtime.model.imageio import decode_image, sniff

from .customvision import CloudTraining, UploadState
from .dataset import SET_APART
from .pull_layout import write_layout, write_object, write_predictions
from .pull_state import PullState, Record
from .sdk_client import SdkClient
from .training_client import TRAINED, CloudError, DomainType, Flavor, Progress
from .verify import verify_export

log = logging.getLogger(__name__)

PAGE = 256  # the service's most images a listing call
WORKERS = 4
ATTEMPTS = 4
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # the service takes uploads of 6 MB at most
MAX_SIDE = 100_000
NEGATIVE, UNTAGGED, EXPORTS, PREDICTIONS = SET_APART
STATE = Path(".pull") / "state.db"
KEPT = 100  # problem messages kept of each kind (all are counted)
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
_SAFE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


class PullRecordError(CloudError):
    """The service sent a record that cannot be written as it is (one image is refused)."""


def shown(value: object, limit: int = 80) -> str:
    """A value from the service, printable on one line."""
    text = str(value).encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


class RateLimiter:
    """At most `per_second` calls a second, across threads (the tier's quota is 10)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second
        self.clock, self.sleep = clock, sleep
        self.next = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            now = self.clock()
            if self.next > now:
                self.sleep(self.next - now)
                now = self.next
            self.next = now + self.interval


def safe_name(value: str, reserved: frozenset[str] = frozenset()) -> str:
    """A file or folder name for a value the service chose: no separators, no leading dot,
    no reserved name; anything changed gets a short hash of the original, so two values
    never share a name."""
    name = _UNSAFE.sub("_", value).strip().lstrip(".")[:80]
    if name == value and name.lower() not in reserved:
        return name
    return f"{name or 'x'}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"


def _finite(values: list[Any], what: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise PullRecordError(f"{what} is not a number") from None
    if not all(math.isfinite(v) for v in numbers):
        raise PullRecordError(f"{what} is not finite")
    return numbers


def _box(values: list[Any], what: str) -> tuple[float, float, float, float]:
    """A normalised left, top, width, height that lies inside the image."""
    left, top, width, height = _finite(values, what)
    if min(left, top) < 0 or width <= 0 or height <= 0 or left + width > 1.001 or top + height > 1.001:
        raise PullRecordError(f"{what} outside the image")
    return left, top, width, height


def _uri(image: Any, image_id: str) -> str:
    uri = image.original_image_uri or ""
    if not uri.startswith(("http://", "https://")):
        raise PullRecordError(f"image {shown(image_id)}: no original image address")
    return str(uri)


def _id(image: Any) -> str:
    image_id = image.id
    if not isinstance(image_id, str) or not image_id:
        raise PullRecordError("an image without an id")
    return image_id


@dataclass(frozen=True)
class Remote:
    """One image as the listing describes it."""

    id: str
    uri: str
    tags: tuple[str, ...]  # tag ids
    regions: tuple[tuple[str, float, float, float, float], ...]  # tag id, left, top, width, height (normalised)
    metadata: dict[str, str]

    @classmethod
    def of(cls, image: Any) -> Remote:
        image_id = _id(image)
        uri = _uri(image, image_id)
        regions = [(str(r.tag_id), *_box([r.left, r.top, r.width, r.height], f"image {shown(image_id)}: a region"))
                   for r in image.regions or []]
        tags = tuple(str(t.tag_id) for t in image.tags or [])
        metadata = {str(k): str(v) for k, v in (image.metadata or {}).items()}
        return cls(image_id, uri, tags, tuple(regions), metadata)

    def record(self, file: str, sha256: str, width: int, height: int, which: str) -> Record:
        return Record(self.id, file, sha256, width, height, which, list(self.tags), [list(r) for r in self.regions],
                      self.metadata)


@dataclass(frozen=True)
class Predicted:
    """One image the prediction endpoint stored, with what the iteration predicted for it."""

    id: str
    uri: str
    created: str | None  # ISO 8601
    iteration: str | None
    predictions: tuple[tuple[float, str, str, str | None, tuple[float, float, float, float] | None], ...]
    # probability, tag id, tag name, tag type, normalised box

    @classmethod
    def of(cls, stored: Any) -> Predicted:
        image_id = _id(stored)
        uri = _uri(stored, image_id)
        what = f"prediction {shown(image_id)}"
        found = []
        for p in stored.predictions or []:
            (probability,) = _finite([p.probability], f"{what}: a probability")
            if not 0 <= probability <= 1:
                raise PullRecordError(f"{what}: a probability outside 0 to 1")
            b = p.bounding_box
            box = None if b is None else _box([b.left, b.top, b.width, b.height], f"{what}: a box")
            found.append((probability, str(p.tag_id), str(p.tag_name), p.tag_type, box))
        created = stored.created.isoformat() if stored.created is not None else None
        return cls(image_id, uri, created, str(stored.iteration) if stored.iteration else None, tuple(found))

    def record(self, file: str, sha256: str, width: int, height: int, which: str) -> Record:
        entries = [{"probability": probability, "tagId": tag_id, "tagName": tag_name, "tagType": tag_type,
                    "boundingBox": None if box is None else dict(zip(("left", "top", "width", "height"), box,
                                                                     strict=True)),
                    "box": None if box is None else [round(box[0] * width, 2), round(box[1] * height, 2),
                                                     round(box[2] * width, 2), round(box[3] * height, 2)]}
                   for probability, tag_id, tag_name, tag_type, box in self.predictions]
        return Record(self.id, file, sha256, width, height, which,
                      extra={"created": self.created, "iteration": self.iteration, "predictions": entries})


Listed = Remote | Predicted


class Problems:
    """Messages of one kind: every one counted, the first KEPT kept (a broken project of
    100,000 images must not fill memory with its complaints)."""

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.count = 0

    def append(self, message: str) -> None:
        self.count += 1
        if len(self.kept) < KEPT:
            self.kept.append(message)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> str:
        return self.kept[index]

    def lines(self, what: str) -> list[str]:
        more = self.count - len(self.kept)
        return self.kept + ([f"... and {more} more {what}"] if more else [])


@dataclass
class Summary:
    project: str
    kind: str
    written: Counter[str] = field(default_factory=Counter)  # per set
    already_here: int = 0
    refused: Problems = field(default_factory=Problems)
    failed: Problems = field(default_factory=Problems)
    exports: list[str] = field(default_factory=list)

    def line(self) -> str:
        sets = ", ".join(f"{self.written[s]} {s}" for s in ("tagged", "negative", "untagged", "predictions")
                         if self.written[s])
        exports = f"; {len(self.exports)} exports verified" if self.exports else ""
        return (f"pulled {self.project} ({self.kind}): {sets or 'no'} images ({self.already_here} already here), "
                f"{len(self.refused)} refused, {len(self.failed)} failed{exports}")

    def problems(self) -> list[str]:
        return self.refused.lines("refused") + self.failed.lines("failed")


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def fetch_image(session: requests.Session, url: str, cap: int = MAX_IMAGE_BYTES, timeout_s: float = 60) -> bytes:
    """The whole file, or _Transient (try again) / PullRecordError (never will be)."""
    try:
        with session.get(url, stream=True, timeout=timeout_s) as r:
            if r.status_code == 429 or r.status_code >= 500:
                after = r.headers.get("Retry-After", "")
                raise _Transient(f"HTTP {r.status_code}", float(after) if after.isdigit() else None)
            if r.status_code != 200:
                raise PullRecordError(f"HTTP {r.status_code}")
            declared = r.headers.get("Content-Length")
            expected = int(declared) if declared and declared.isdigit() else None
            if expected is not None and expected > cap:
                raise PullRecordError(f"says it is {expected} bytes, over the {cap}-byte cap")
            data = bytearray()
            for block in r.iter_content(1 << 16):
                data += block
                if len(data) > cap:
                    raise PullRecordError(f"over the {cap}-byte cap")
    except requests.RequestException as exc:
        raise _Transient(f"cut ({exc.__class__.__name__})") from None
    if expected is not None and len(data) != expected:
        raise _Transient(f"cut: {len(data)} of {expected} bytes")
    return bytes(data)


class Pull:
    """Pull one project into `out`; `run` returns the summary (nothing raised per image)."""

    def __init__(self, client: SdkClient, out: Path, progress: Progress | None = None, page: int = PAGE,
                 workers: int = WORKERS, sleep: Callable[[float], None] = time.sleep, poll_s: float = 5.0,
                 timeout_s: float = 1800) -> None:
        if not 1 <= page <= PAGE:
            raise ValueError(f"page size must be 1 to {PAGE}")
        self.client, self.out, self.progress = client, out, progress
        self.page, self.workers, self.sleep = page, workers, sleep
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.session = requests.Session()
        self.state: PullState  # opened by `run`

    # -- the project ----------------------------------------------------------------------
    def _project(self, name_or_id: str) -> Any:
        projects = self.client.projects()
        match = next((p for p in projects if p.id == name_or_id), None) or \
            next((p for p in projects if p.name == name_or_id), None)
        if match is None:
            raise CloudError(f"no Custom Vision project named {shown(name_or_id)}")
        return self.client.call("get_project", match.id)

    def _kind(self, project: Any) -> tuple[str, dict[str, Any]]:
        settings = project.settings
        domain = next((d for d in self.client.domains() if d.id == settings.domain_id), None)
        if domain is not None and domain.type is DomainType.OBJECT_DETECTION:
            kind = "detection"
        else:
            kind = "multilabel" if (settings.classification_type or "").lower() == "multilabel" else "classification"
        return kind, {"domainId": settings.domain_id, "domain": domain.name if domain else None,
                      "domainType": domain.type.value if domain else None,
                      "classificationType": settings.classification_type}

    # -- the files written -----------------------------------------------------------------
    def _have(self, record: Record) -> bool:
        path = self.out / record.file
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
        except OSError:
            return False

    def _inside(self, relative: str) -> Path:
        path = self.out / relative
        root = self.out.resolve()
        if root not in path.resolve().parents:
            raise PullRecordError(f"{shown(relative)} would be written outside {self.out}")
        return path

    # -- one image ------------------------------------------------------------------------
    def _download(self, remote: Listed, folder: str) -> tuple[Path, bytes, int, int]:
        why = ""
        for attempt in range(ATTEMPTS):
            try:
                data = fetch_image(self.session, remote.uri)
                image = decode_image(data)
                return Path(folder) / f"{safe_name(remote.id)}.{sniff(data)}", data, image.shape[1], image.shape[0]
            except ImageError as exc:
                why, delay = f"not decodable ({exc})", 0.5 * 2**attempt
            except _Transient as exc:
                why, delay = str(exc), exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt
            log.warning("image %s: %s; fetching it again", shown(remote.id), why)
            self.sleep(min(delay, 60.0))
        raise CloudError(f"image {shown(remote.id)}: {why} after {ATTEMPTS} tries")

    def _fetch(self, remote: Listed, folder: str, which: str) -> Record:
        relative, data, width, height = self._download(remote, folder)
        path = self._inside(str(relative))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        os.replace(partial, path)
        return remote.record(relative.as_posix(), hashlib.sha256(data).hexdigest(), width, height, which)

    # -- listing ----------------------------------------------------------------------------
    def _pages(self, operation: str, project_id: str) -> Iterator[list[Any]]:
        skip = 0
        while True:
            page = self.client.call(operation, project_id, take=self.page, skip=skip) or []
            if page:
                yield page
            if len(page) < self.page:
                return
            skip += len(page)

    def _place(self, remote: Remote, tags: dict[str, dict[str, Any]], kind: str, untagged: bool) -> tuple[str, str]:
        """(folder, set) for an image."""
        if untagged:
            return UNTAGGED, "untagged"
        named = remote.tags + tuple(r[0] for r in remote.regions)
        unknown = [t for t in named if t not in tags]
        if unknown:
            raise PullRecordError(f"image {shown(remote.id)}: tag {shown(unknown[0])} is not in the project")
        if any(tags[t]["type"] == "Negative" for t in remote.tags):
            return NEGATIVE, "negative"
        if kind != "classification":
            return "images", "tagged"
        if len(remote.tags) != 1:
            raise PullRecordError(f"image {shown(remote.id)}: {len(remote.tags)} tags in a multiclass project")
        return tags[remote.tags[0]]["folder"], "tagged"

    def _images(self, project_id: str, operation: str, tags: dict[str, dict[str, Any]], kind: str,
                summary: Summary, pool: ThreadPoolExecutor, counted: list[int], total: int) -> None:
        for page in self._pages(operation, project_id):
            wanted: list[tuple[Listed, str, str]] = []
            for image in page:
                try:
                    remote = Remote.of(image)
                    wanted.append((remote, *self._place(remote, tags, kind, operation == "get_untagged_images")))
                except PullRecordError as exc:
                    summary.refused.append(str(exc))
            self._take("images", wanted, summary, pool)
            counted[0] += len(page)
            if self.progress:
                self.progress("images", min(counted[0], total), total)

    def _predictions(self, project_id: str, summary: Summary, pool: ThreadPoolExecutor) -> None:
        token: Any = None
        while True:
            results, token = self.client.query_predictions(project_id, token, self.page)
            wanted: list[tuple[Listed, str, str]] = []
            for stored in results:
                try:
                    wanted.append((Predicted.of(stored), PREDICTIONS, "predictions"))
                except PullRecordError as exc:
                    summary.refused.append(str(exc))
            self._take("predictions", wanted, summary, pool)
            if token is None or not results:
                return

    def _take(self, source: str, wanted: list[tuple[Listed, str, str]], summary: Summary,
              pool: ThreadPoolExecutor) -> None:
        """Fetch one page's images that are not here yet, and write the page's rows in its order
        (each file is on disk before its row)."""
        rows: list[Record | Future[Record]] = []
        batch: set[str] = set()
        for remote, folder, which in wanted:
            known = self.state.get(source, remote.id)
            if remote.id in batch or (known is not None and known[1]):
                continue  # listed twice
            batch.add(remote.id)
            old = known[0] if known is not None else None
            if old is not None and Path(old.file).parent == Path(folder) and self._have(old):
                rows.append(remote.record(old.file, old.sha256, old.width, old.height, which))
                summary.already_here += 1
                continue
            if old is not None and Path(old.file).parent != Path(folder):
                self._inside(old.file).unlink(missing_ok=True)  # retagged: never left under its old tag
            rows.append(pool.submit(self._fetch, remote, folder, which))
        for row in rows:
            try:
                record = row.result() if isinstance(row, Future) else row
            except CloudError as exc:
                summary.failed.append(str(exc))
                continue
            self.state.put(source, record)
            summary.written[record.set] += 1
        self.state.commit()

    # -- project.json -------------------------------------------------------------------
    def _iterations(self, project_id: str, kind: str, exports: bool, summary: Summary) -> list[dict[str, Any]]:
        out = []
        run = CloudTraining(self.client, UploadState(self.out / ".pull" / "unused.json"), self.progress,
                            sleep=self.sleep, poll_s=self.poll_s)
        for it in self.client.iterations(project_id):
            entry: dict[str, Any] = {"id": it.id, "name": it.name, "status": it.status,
                                     "publishName": it.publish_name or None, "trainedAt": it.trained_at or None}
            if it.status == TRAINED:
                perf = self.client.performance(project_id, it.id, 0.5, 0.3 if kind == "detection" else None)
                entry["performance"] = {"threshold": 0.5, "precision": perf.precision, "recall": perf.recall,
                                        "averagePrecision": perf.average_precision,
                                        "perTag": [asdict(t) for t in perf.per_tag]}
                if exports:
                    entry["export"] = self._export(run, project_id, it.id, summary)
            out.append(entry)
        return out

    def _export(self, run: CloudTraining, project_id: str, iteration_id: str, summary: Summary) -> str | None:
        if not _SAFE_ID.fullmatch(iteration_id):
            summary.failed.append(f"iteration {shown(iteration_id)}: not an id that can name a file; not exported")
            return None
        (self.out / ".pull").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.out / ".pull") as tmp:
            zip_path = run.export(project_id, iteration_id, Path(tmp), Flavor.ONNX, timeout_s=self.timeout_s)
            verify_export(zip_path)  # raises on a bad export: nothing unverified takes the final name
            target = self.out / EXPORTS / f"{iteration_id}.zip"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(zip_path, target)
        summary.exports.append(iteration_id)
        return f"{EXPORTS}/{iteration_id}.zip"

    # -- the whole run ---------------------------------------------------------------------
    def run(self, name_or_id: str, exports: bool = False, untagged: bool = False,
            predictions: bool = False) -> Summary:
        project = self._project(name_or_id)
        kind, settings = self._kind(project)
        summary = Summary(shown(project.name), kind)
        reserved = frozenset(SET_APART) | {"images"}
        tags: dict[str, dict[str, Any]] = {}
        folders: set[str] = set()
        for tag in self.client.call("get_tags", project.id):
            folder = safe_name(str(tag.name), frozenset(reserved | folders))
            folders.add(folder.lower())
            tags[str(tag.id)] = {"id": str(tag.id), "name": str(tag.name), "type": tag.type or "Regular",
                                 "folder": folder}
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = PullState.open(self.out / STATE)
        try:
            self._all_images(project.id, tags, kind, summary, untagged, predictions)
        finally:
            self.state.close()
        info = {"project": {"id": project.id, "name": project.name, "description": project.description},
                "kind": kind, "settings": settings,
                "tags": [{k: v for k, v in t.items() if k != "folder" or kind == "classification"}
                         for t in tags.values()],
                "iterations": self._iterations(project.id, kind, exports, summary)}
        write_object(self.out / "project.json", info, {})
        return summary

    def _all_images(self, project_id: str, tags: dict[str, dict[str, Any]], kind: str, summary: Summary,
                    untagged: bool, predictions: bool) -> None:
        operations = ["get_tagged_images"] + (["get_untagged_images"] if untagged else [])
        total = sum(int(self.client.call(op.replace("images", "image_count"), project_id)) for op in operations)
        counted = [0]
        with ThreadPoolExecutor(self.workers) as pool:
            for operation in operations:
                self._images(project_id, operation, tags, kind, summary, pool, counted, total)
            if predictions:
                self._predictions(project_id, summary, pool)
        write_layout(self.out, self.state, kind, tags)
        if predictions:
            write_predictions(self.out / PREDICTIONS / "predictions.json", self.state)
