"""Train in Azure Custom Vision, resumably, and export ONNX: the logic, over a TrainingClient.

    client = SdkClient.connect(load_credentials())      # or FakeTrainingClient(...) in tests
    run = CloudTraining(client, state=UploadState.open(out / ".state" / "shelf.json"))
    result = run.train(dataset, project="shelf", domain="General (compact)")
    zip_path = run.export(result.project_id, result.iteration_id, out / "download")

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
from .metrics import Evaluation, TagMetrics
from .training_client import (
    EXPORT_FAILED,
    EXPORTED,
    FAILED,
    MAX_BATCH_IMAGES,
    MAX_BATCH_TAGS,
    TRAINED,
    UPLOADED,
    CloudError,
    Domain,
    DomainType,
    Export,
    Flavor,
    NewImage,
    NewRegion,
    Progress,
    Project,
    TrainingClient,
)

__all__ = ["CloudError", "CloudTraining", "TrainedIteration", "UploadReport", "UploadState", "UploadStateError"]

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 5.0


class UploadStateError(EdgeRuntimeError):
    """The upload state file cannot be read."""


def _strings(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{key!r} is not a map of strings")
    return dict(value)


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
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            project_id = data.get("project_id", "")
            if not isinstance(project_id, str):
                raise ValueError("'project_id' is not a string")
            return cls(path, project_id, _strings(data.get("tags", {}), "tags"),
                       _strings(data.get("images", {}), "images"))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
            raise UploadStateError(
                f"upload state {path} is unreadable ({reason}); delete it and run again: images the service "
                "already holds are then recognised as duplicates, not stored twice") from None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"project_id": self.project_id, "tags": self.tags, "images": self.images}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new state, never half


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
    metrics: Evaluation
    tag_ids: dict[str, str]
    upload: UploadReport


class CloudTraining:
    def __init__(self, client: TrainingClient, state: UploadState, progress: Progress | None = None,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S) -> None:
        self.client = client
        self.state = state
        self.progress = progress
        self.sleep = sleep
        self.poll_s = poll_s

    # -- project, tags ---------------------------------------------------------------
    def domain(self, name: str, kind: Kind) -> Domain:
        wanted = DomainType.OBJECT_DETECTION if kind is Kind.DETECTION else DomainType.CLASSIFICATION
        domains = [d for d in self.client.domains() if d.type is wanted]
        for d in domains:
            if d.name.lower() == name.lower():
                if not d.exportable:
                    raise CloudError(f"domain {d.name!r} cannot be exported; pick a compact domain")
                return d
        choices = ", ".join(sorted(d.name for d in domains if d.exportable))
        raise CloudError(f"no exportable {wanted.value} domain named {name!r}; choose one of: {choices}")

    def _named(self, name: str) -> Project | None:
        return next((p for p in self.client.projects() if p.name == name), None)

    def find_project(self, name: str) -> Project:
        project = self._named(name)
        if project is None:
            raise CloudError(f"no project named {name!r}")
        return project

    def project(self, name: str, domain: Domain, kind: Kind) -> Project:
        """The named project, created on `domain` if it does not exist yet."""
        existing = self._named(name)
        if existing is not None:
            if existing.domain_id and existing.domain_id != domain.id:
                raise CloudError(f"project {name!r} exists on another domain; use another --project")
            return existing
        classification = {Kind.MULTILABEL: "Multilabel", Kind.CLASSIFICATION: "Multiclass"}.get(kind)
        return self.client.create_project(name, domain.id, classification)

    def tags(self, project_id: str, names: Sequence[str]) -> dict[str, str]:
        existing = {t.name: t.id for t in self.client.tags(project_id)}
        for name in names:
            if name not in existing:
                existing[name] = self.client.create_tag(project_id, name).id
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

    @staticmethod
    def new_image(item: Item, tag_ids: dict[str, str]) -> NewImage:
        return NewImage(item.path.name, item.data, tuple(tag_ids[t] for t in item.tags),
                        tuple(NewRegion(tag_ids[r.tag], r.left, r.top, r.width, r.height) for r in item.regions))

    def upload(self, project_id: str, dataset: Dataset, tag_ids: dict[str, str]) -> UploadReport:
        pending = [i for i in dataset.items if i.sha1 not in self.state.images]
        already = len(dataset.items) - len(pending)
        uploaded, failed = 0, []
        for batch in self.batches(pending):
            results = self.client.upload(project_id, [self.new_image(item, tag_ids) for item in batch])
            for item, result in zip(batch, results, strict=True):
                if result.status in UPLOADED:
                    self.state.images[item.sha1] = result.image_id
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
        started = self.client.train(proj.id, training_type, budget_hours)
        iteration = self.wait_for("training", lambda: self.client.iteration(proj.id, started.id),
                                  lambda it: it.status in (TRAINED, FAILED), timeout_s)
        if iteration.status != TRAINED:
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

    def performance(self, project_id: str, iteration_id: str, threshold: float, kind: Kind) -> Evaluation:
        perf = self.client.performance(project_id, iteration_id, threshold,
                                       0.3 if kind is Kind.DETECTION else None)
        per_tag = tuple(TagMetrics(t.name, t.precision, t.recall, t.average_precision, 0) for t in perf.per_tag)
        return Evaluation(threshold, perf.precision, perf.recall, perf.average_precision, per_tag,
                       source="reported by Custom Vision")

    def publish(self, project_id: str, iteration_id: str, name: str, prediction_resource_id: str) -> None:
        if not prediction_resource_id:
            raise CloudError("publishing needs CUSTOMVISION_PREDICTION_RESOURCE_ID (the prediction resource's id)")
        self.client.publish(project_id, iteration_id, name, prediction_resource_id)

    # -- export ----------------------------------------------------------------------------
    def export(self, project_id: str, iteration_id: str, folder: Path, flavor: Flavor = Flavor.ONNX,
               timeout_s: float = 1800) -> Path:
        """Ask for an ONNX export, wait until it is Done, and stream the zip to `folder`."""
        def current() -> Export | None:
            exports = self.client.exports(project_id, iteration_id)
            return next((e for e in exports if e.platform == "ONNX" and e.flavor is flavor), None)

        if current() is None:
            self.client.export(project_id, iteration_id, flavor)
        done = self.wait_for("export", current, lambda e: e is not None and e.status in (EXPORTED, EXPORT_FAILED),
                             timeout_s)
        if done is None or done.status != EXPORTED or not done.download_uri:
            status = done.status if done else "missing"
            raise CloudError(f"export of iteration {iteration_id} ({flavor.value}) ended as {status}")
        return self.client.download(done.download_uri, folder / f"{iteration_id}.zip", self.progress)
