"""Train in Azure Custom Vision through its official SDK, resumably, and export ONNX.

    service = SdkService.connect(load_credentials())
    run = CloudTraining(service, state=UploadState.open(out / ".state" / "shelf.json"))
    result = run.train(dataset, project="shelf", domain="General (compact)")
    zip_path = run.export(result.project_id, result.iteration_id, out / "download")

Every SDK call goes through `SdkService.call`, which retries 429 (honouring Retry-After)
and 5xx with capped exponential backoff and maps the SDK's exceptions to CloudError.
Uploads record each image's content hash once the service has it, in a state file
written after every batch, so a run that crashed re-uploads nothing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_runtime.errors import EdgeRuntimeError

from .dataset import Dataset, Item, Kind
from .metrics import Metrics, TagMetrics
from .secrets import Credentials

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH_IMAGES = 64
MAX_BATCH_TAGS = 20
RETRIES = 6
BACKOFF_S = 1.0
BACKOFF_MAX_S = 60.0
POLL_S = 5.0
UPLOADED = {"OK", "OKDuplicate"}
Progress = Callable[[str, int, int], None]


class CloudError(EdgeRuntimeError):
    """The Custom Vision service refused or failed a request."""


@dataclass
class UploadState:
    """What the service already holds for one project: written after every batch."""

    path: Path
    project_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # tag name -> id
    images: dict[str, str] = field(default_factory=dict)  # content SHA-1 -> image id

    @classmethod
    def open(cls, path: Path) -> UploadState:
        if not path.is_file():
            return cls(path)
        data = json.loads(path.read_text())
        return cls(path, data.get("project_id", ""), dict(data.get("tags", {})), dict(data.get("images", {})))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"project_id": self.project_id, "tags": self.tags, "images": self.images}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new state, never half


def _status(exc: Exception) -> tuple[int | None, float | None]:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    retry_after = None
    headers = getattr(response, "headers", None) or {}
    if headers.get("Retry-After"):
        try:
            retry_after = float(headers["Retry-After"])
        except ValueError:
            retry_after = None
    return code, retry_after


def _message(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    inner = getattr(error, "message", None) or getattr(getattr(error, "error", None), "message", None)
    code, _ = _status(exc)
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = inner or first_line
    return f"{text} (HTTP {code})" if code else text


class SdkService:
    """The training SDK behind one retrying, error-mapping `call`."""

    def __init__(self, client: Any, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.sleep = sleep
        self.retries_done = 0

    @classmethod
    def connect(cls, credentials: Credentials, sleep: Callable[[float], None] = time.sleep) -> SdkService:
        from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
        from msrest.authentication import ApiKeyCredentials

        client = CustomVisionTrainingClient(  # type: ignore[no-untyped-call]
            credentials.endpoint, ApiKeyCredentials(in_headers={"Training-key": credentials.training_key}))
        client.config.retry_policy.retries = 0  # retries happen in `call`, where Retry-After is honoured
        client.config.connection.timeout = 120
        return cls(client, sleep)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from msrest.exceptions import ClientRequestError, HttpOperationError

        for attempt in range(RETRIES + 1):
            log.debug("Custom Vision %s (attempt %d)", name, attempt + 1)
            try:
                return getattr(self.client, name)(*args, **kwargs)
            except (HttpOperationError, ClientRequestError) as exc:
                code, retry_after = _status(exc)
                transient = code is None or code == 429 or code >= 500
                if not transient or attempt == RETRIES:
                    raise CloudError(f"Custom Vision {name}: {_message(exc)}") from None
                delay = retry_after if retry_after is not None else min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt)
                log.warning("Custom Vision %s: %s; retrying in %.1f s", name, _message(exc), delay)
                self.retries_done += 1
                self.sleep(delay)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class UploadReport:
    uploaded: int
    already_there: int
    failed: list[tuple[str, str]]  # (file, status)


@dataclass(frozen=True)
class TrainedIteration:
    project_id: str
    iteration_id: str
    domain: str
    metrics: Metrics
    tag_ids: dict[str, str]
    upload: UploadReport


class CloudTraining:
    def __init__(self, service: SdkService, state: UploadState, progress: Progress | None = None,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S) -> None:
        self.service = service
        self.state = state
        self.progress = progress
        self.sleep = sleep
        self.poll_s = poll_s

    # -- project, tags ---------------------------------------------------------------
    def domain(self, name: str, kind: Kind) -> Any:
        wanted = "ObjectDetection" if kind is Kind.DETECTION else "Classification"
        domains = self.service.call("get_domains")
        for d in domains:
            if d.name.lower() == name.lower() and d.type == wanted:
                if not d.exportable:
                    raise CloudError(f"domain {d.name!r} cannot be exported; pick a compact domain")
                return d
        choices = ", ".join(sorted(d.name for d in domains if d.type == wanted and d.exportable))
        raise CloudError(f"no exportable {wanted} domain named {name!r}; choose one of: {choices}")

    def find_project(self, name: str, required: bool = True) -> Any:
        project = next((p for p in self.service.call("get_projects") if p.name == name), None)
        if project is None and required:
            raise CloudError(f"no project named {name!r}")
        return project

    def project(self, name: str, domain: Any, kind: Kind) -> Any:
        existing = self.find_project(name, required=False)
        if existing is not None:
            if existing.settings and existing.settings.domain_id != domain.id:
                raise CloudError(f"project {name!r} exists on another domain; use another --project")
            return existing
        classification = {Kind.MULTILABEL: "Multilabel", Kind.CLASSIFICATION: "Multiclass"}.get(kind)
        return self.service.call("create_project", name, domain_id=domain.id, classification_type=classification,
                                 target_export_platforms=["ONNX"])

    def tags(self, project_id: str, names: Sequence[str]) -> dict[str, str]:
        existing = {t.name: t.id for t in self.service.call("get_tags", project_id)}
        for name in names:
            if name not in existing:
                existing[name] = self.service.call("create_tag", project_id, name).id
        return existing

    # -- uploads -------------------------------------------------------------------------
    @staticmethod
    def batches(items: Sequence[Item]) -> Iterator[list[Item]]:
        """At most 64 images and 20 distinct tags per batch, as the API requires."""
        batch: list[Item] = []
        tags: set[str] = set()
        for item in items:
            item_tags = set(item.tags) | {r.tag for r in item.regions}
            if batch and (len(batch) == MAX_BATCH_IMAGES or len(tags | item_tags) > MAX_BATCH_TAGS):
                yield batch
                batch, tags = [], set()
            batch.append(item)
            tags |= item_tags
        if batch:
            yield batch

    def upload(self, project_id: str, dataset: Dataset, tag_ids: dict[str, str]) -> UploadReport:
        from azure.cognitiveservices.vision.customvision.training.models import (
            ImageFileCreateBatch,
            ImageFileCreateEntry,
            Region,
        )

        pending = [i for i in dataset.items if i.sha1 not in self.state.images]
        already = len(dataset.items) - len(pending)
        uploaded, failed = 0, []
        for batch in self.batches(pending):
            entries = [ImageFileCreateEntry(
                name=item.path.name, contents=bytearray(item.data), tag_ids=[tag_ids[t] for t in item.tags] or None,
                regions=[Region(tag_id=tag_ids[r.tag], left=r.left, top=r.top, width=r.width, height=r.height)
                         for r in item.regions] or None) for item in batch]
            summary = self.service.call("create_images_from_files", project_id, ImageFileCreateBatch(images=entries))
            for item, result in zip(batch, summary.images, strict=True):
                if result.status in UPLOADED:
                    self.state.images[item.sha1] = result.image.id if result.image else ""
                    uploaded += result.status == "OK"
                    already += result.status == "OKDuplicate"
                else:
                    failed.append((str(item.path), result.status))
            self.state.save()
            if self.progress:
                self.progress("upload", already + uploaded + len(failed), len(dataset.items))
        return UploadReport(uploaded, already, failed)

    # -- training ------------------------------------------------------------------------
    def train(self, dataset: Dataset, project: str, domain: str, training_type: str = "Regular",
              budget_hours: int = 0, timeout_s: float = 3600, threshold: float = 0.5) -> TrainedIteration:
        dom = self.domain(domain, dataset.kind)
        proj = self.project(project, dom, dataset.kind)
        if self.state.project_id != proj.id:
            self.state.project_id, self.state.images = proj.id, {}
        tag_ids = self.tags(proj.id, dataset.tags)
        self.state.tags = tag_ids
        self.state.save()
        upload = self.upload(proj.id, dataset, tag_ids)
        if upload.failed:
            log.warning("%d images were refused: %s", len(upload.failed),
                        ", ".join(f"{f} ({s})" for f, s in upload.failed[:5]))
        iteration = self.service.call("train_project", proj.id, training_type=training_type,
                                      reserved_budget_in_hours=budget_hours, force_train=False)
        iteration = self.wait_for("training", lambda: self.service.call("get_iteration", proj.id, iteration.id),
                                  lambda it: it.status in ("Completed", "Failed"), timeout_s)
        if iteration.status != "Completed":
            raise CloudError(f"training iteration {iteration.id} ended as {iteration.status}")
        metrics = self.performance(proj.id, iteration.id, threshold, dataset.kind)
        return TrainedIteration(proj.id, iteration.id, dom.name, metrics, tag_ids, upload)

    def wait_for(self, what: str, fetch: Callable[[], T], done: Callable[[T], bool], timeout_s: float) -> T:
        deadline = time.monotonic() + timeout_s
        polls = 0
        while True:
            value = fetch()
            polls += 1
            if self.progress:
                self.progress(what, polls, polls + (0 if done(value) else 1))
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise CloudError(f"{what} did not finish within {timeout_s:.0f} s")
            self.sleep(self.poll_s)

    def performance(self, project_id: str, iteration_id: str, threshold: float, kind: Kind) -> Metrics:
        perf = self.service.call("get_iteration_performance", project_id, iteration_id, threshold=threshold,
                                 overlap_threshold=0.3 if kind is Kind.DETECTION else None)
        per_tag = tuple(TagMetrics(t.name, t.precision, t.recall, t.average_precision, 0)
                        for t in perf.per_tag_performance or [])
        return Metrics(threshold, perf.precision, perf.recall, perf.average_precision, per_tag,
                       source="reported by Custom Vision")

    def publish(self, project_id: str, iteration_id: str, name: str, prediction_resource_id: str) -> None:
        if not prediction_resource_id:
            raise CloudError("publishing needs CUSTOMVISION_PREDICTION_RESOURCE_ID (the prediction resource's id)")
        self.service.call("publish_iteration", project_id, iteration_id, name, prediction_resource_id)

    # -- export ----------------------------------------------------------------------------
    def export(self, project_id: str, iteration_id: str, folder: Path, flavor: str | None = None,
               timeout_s: float = 1800) -> Path:
        """Ask for an ONNX export, wait until it is Done, and stream the zip to `folder`."""
        def current() -> Any:
            exports = self.service.call("get_exports", project_id, iteration_id)
            return next((e for e in exports if e.platform == "ONNX" and (e.flavor or None) == flavor), None)

        if current() is None:
            self.service.call("export_iteration", project_id, iteration_id, "ONNX", flavor=flavor)
        done = self.wait_for("export", current, lambda e: e is not None and e.status in ("Done", "Failed"),
                             timeout_s)
        if done.status != "Done" or not done.download_uri:
            raise CloudError(f"export of iteration {iteration_id} ended as {done.status}")
        return download(done.download_uri, folder / f"{iteration_id}.zip", self.progress)


def download(url: str, target: Path, progress: Progress | None = None, chunk: int = 1 << 16) -> Path:
    """Stream a file to disk (a partial download never takes the final name)."""
    import requests

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with requests.get(url, stream=True, timeout=60) as r:
            r.raise_for_status()
            total = int(r.headers.get("Content-Length") or 0)
            got = 0
            with open(partial, "wb") as f:
                for block in r.iter_content(chunk):
                    f.write(block)
                    got += len(block)
                    if progress and total:
                        progress("download", got, total)
    except (requests.RequestException, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise CloudError(f"downloading the export failed: {exc.__class__.__name__}") from None
    partial.replace(target)
    return target
