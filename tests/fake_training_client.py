"""An in-memory TrainingClient that behaves like the service where edge-export depends on it.

    client = FakeTrainingClient(export_zip=Path("export.zip"))
    run = CloudTraining(client, UploadState.open(tmp / "state.json"), poll_s=0)

It keeps the service's batch limits (64 images, 20 tags) and per-image statuses (OK,
OKDuplicate by content, ErrorImageSize over 6 MB), trains in a few polls, exports in a
few more, and "downloads" by copying `export_zip`. `fail_uploads_after` makes every
upload after that many batches fail, as a service outage would; `training_outcome`
"Failed" makes training fail.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exporter import training_client as api

MAX_IMAGE_BYTES = 6 * 1024 * 1024
DOMAINS = (
    api.Domain("0732100f-1a38-4e49-a514-c9b44c697ab5", "General", api.DomainType.CLASSIFICATION, False),
    api.Domain("0732100f-1a38-4e49-a514-c9b44c697ab6", "General (compact)", api.DomainType.CLASSIFICATION, True),
    api.Domain("a1db07ca-a19a-4830-bae8-e004a42dc863", "General (compact) [S1]", api.DomainType.CLASSIFICATION, True),
    api.Domain("a27d5ca5-bb19-49d8-a70a-fec086c47f5b", "General (compact)", api.DomainType.OBJECT_DETECTION, True),
)


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class FakeTrainingClient:
    export_zip: Path | None = None
    fail_uploads_after: int | None = None  # batches; then every upload answers 503
    polls_to_train: int = 3
    training_outcome: str = api.TRAINED  # or "Failed"
    polls_to_export: int = 2
    projects_by_id: dict[str, api.Project] = field(default_factory=dict)
    classification: dict[str, str | None] = field(default_factory=dict)  # project id -> type
    tags_by_project: dict[str, list[api.Tag]] = field(default_factory=dict)
    images: dict[str, dict[str, api.NewImage]] = field(default_factory=dict)  # project -> sha1 -> image
    received: list[str] = field(default_factory=list)  # sha1 of every image sent, duplicates included
    batches: int = 0
    trained: dict[str, tuple[str, api.Iteration, str, int]] = field(default_factory=dict)  # id -> project, ...
    polls: dict[str, int] = field(default_factory=dict)
    exported: dict[tuple[str, api.Flavor], int] = field(default_factory=dict)  # (iteration, flavor) -> polls
    published: list[tuple[str, str]] = field(default_factory=list)

    def domains(self) -> list[api.Domain]:
        return list(DOMAINS)

    def projects(self) -> list[api.Project]:
        return list(self.projects_by_id.values())

    def create_project(self, name: str, domain_id: str, classification: str | None) -> api.Project:
        project = api.Project(_id(), name, domain_id)
        self.projects_by_id[project.id] = project
        self.classification[project.id] = classification
        self.tags_by_project[project.id], self.images[project.id] = [], {}
        return project

    def _project(self, project_id: str) -> api.Project:
        if project_id not in self.projects_by_id:
            raise api.CloudError(f"Custom Vision: project {project_id} not found (HTTP 404)")
        return self.projects_by_id[project_id]

    def tags(self, project_id: str) -> list[api.Tag]:
        self._project(project_id)
        return list(self.tags_by_project[project_id])

    def create_tag(self, project_id: str, name: str) -> api.Tag:
        if any(t.name == name for t in self.tags(project_id)):
            raise api.CloudError(f"Custom Vision create_tag: tag {name!r} already exists (HTTP 400)")
        tag = api.Tag(_id(), name)
        self.tags_by_project[project_id].append(tag)
        return tag

    def upload(self, project_id: str, images: Sequence[api.NewImage]) -> list[api.UploadResult]:
        known = {t.id for t in self.tags(project_id)}
        if self.fail_uploads_after is not None and self.batches >= self.fail_uploads_after:
            raise api.CloudError("Custom Vision create_images_from_files: The service is unavailable. (HTTP 503)")
        used = {t for i in images for t in i.tag_ids} | {r.tag_id for i in images for r in i.regions}
        if len(images) > api.MAX_BATCH_IMAGES or len(used) > api.MAX_BATCH_TAGS:
            raise api.CloudError("Custom Vision create_images_from_files: batch over 64 images or 20 tags (HTTP 400)")
        if used - known:
            raise api.CloudError("Custom Vision create_images_from_files: unknown tag id (HTTP 400)")
        self.batches += 1
        held, results = self.images[project_id], []
        for image in images:
            sha1 = hashlib.sha1(image.data).hexdigest()
            self.received.append(sha1)
            if len(image.data) > MAX_IMAGE_BYTES:
                results.append(api.UploadResult("ErrorImageSize"))
                continue
            status = "OKDuplicate" if sha1 in held else "OK"
            held.setdefault(sha1, image)
            results.append(api.UploadResult(status, sha1))
        return results

    def train(self, project_id: str, training_type: str, budget_hours: int) -> api.Iteration:
        if not self.images.get(project_id):
            raise api.CloudError("Custom Vision train_project: Not enough images for training. (HTTP 400)")
        number = sum(1 for p, *_ in self.trained.values() if p == project_id) + 1
        iteration = api.Iteration(_id(), f"api.Iteration {number}", "Training")
        self.trained[iteration.id] = (project_id, iteration, training_type, budget_hours)
        return iteration

    def _iteration(self, project_id: str, iteration_id: str) -> api.Iteration:
        if self.trained.get(iteration_id, ("",))[0] != project_id:
            raise api.CloudError(f"Custom Vision: iteration {iteration_id} not found (HTTP 404)")
        return self.trained[iteration_id][1]

    def iteration(self, project_id: str, iteration_id: str) -> api.Iteration:
        self._iteration(project_id, iteration_id)
        self.polls[iteration_id] = self.polls.get(iteration_id, 0) + 1
        project, iteration, training_type, budget = self.trained[iteration_id]
        if self.polls[iteration_id] >= self.polls_to_train and iteration.status == "Training":
            iteration = api.Iteration(iteration.id, iteration.name, self.training_outcome, iteration.publish_name)
            self.trained[iteration_id] = (project, iteration, training_type, budget)
        return iteration

    def iterations(self, project_id: str) -> list[api.Iteration]:
        self._project(project_id)
        return [it for p, it, *_ in self.trained.values() if p == project_id]

    def performance(self, project_id: str, iteration_id: str, threshold: float,
                    overlap_threshold: float | None) -> api.Performance:
        per_tag = tuple(api.TagPerformance(t.name, 0.9, 0.8, 0.95) for t in self.tags(project_id))
        return api.Performance(0.9, 0.8, 0.95, per_tag)

    def exports(self, project_id: str, iteration_id: str) -> list[api.Export]:
        found = []
        for (iid, flavor), polls in list(self.exported.items()):
            if iid == iteration_id:
                self.exported[(iid, flavor)] = polls + 1
                done = polls + 1 >= self.polls_to_export
                found.append(api.Export("ONNX", flavor, api.EXPORTED if done else "Exporting",
                                    f"fake://{iid}/{flavor.value}.zip" if done else ""))
        return found

    def export(self, project_id: str, iteration_id: str, flavor: api.Flavor) -> None:
        if self._iteration(project_id, iteration_id).status != api.TRAINED:
            raise api.CloudError("Custom Vision export_iteration: the iteration is not trained (HTTP 400)")
        self.exported[(iteration_id, flavor)] = 0

    def publish(self, project_id: str, iteration_id: str, name: str, prediction_resource_id: str) -> None:
        self._iteration(project_id, iteration_id)
        self.published.append((iteration_id, name))

    def download(self, uri: str, target: Path, progress: api.Progress | None = None) -> Path:
        if self.export_zip is None or not uri.startswith("fake://"):
            raise api.CloudError("downloading the export failed: HTTPError")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.export_zip, target)
        return target
