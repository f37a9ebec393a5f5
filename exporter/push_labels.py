"""Labels made on a device, up to a Custom Vision project, for users who still train there.

    store = EventStore.open_readonly(Path("data"))
    report = push_labels(store, "shelf", "shelf-project", CloudTraining(client, state), Path("work"))

The model's labels come out of the event store (read-only: safe while the server records)
through the runtime's own dataset export, are read and checked by `load_dataset` like any
dataset, and go up through the same upload as `edge-export train --backend customvision`:
tags created where the project lacks them, batches of at most 64 images and 20 tags
(`create_images_from_files` with tag ids or regions), 429 waited out, an image the project
already holds counted as there, and each image recorded in the upload state once the
service has it, so a second run sends only what is new.
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.events.export import export_dataset
from edge_runtime.events.store import EventStore

from .customvision import CloudTraining, UploadReport
from .dataset import Kind, load_dataset
from .training_client import CloudError, DomainType, Project


def find_project(run: CloudTraining, project: str) -> Project:
    """The project with this id or name."""
    found = next((p for p in run.client.projects() if project in (p.id, p.name)), None)
    if found is None:
        raise CloudError(f"no project with the id or name {project!r}")
    return found


def push_labels(store: EventStore, model: str, project: str, run: CloudTraining, work: Path) -> UploadReport:
    """Upload every label of `model` to `project`; what the service took, held already, or refused.
    `work` is an empty folder for the dataset on its way up."""
    target = find_project(run, project)
    export_dataset(store, work, model, held_out=0.0)  # every label goes up: the service splits its own
    dataset = load_dataset(work / "train")
    domains = {d.id: d for d in run.client.domains()}
    domain = domains.get(target.domain_id)
    wants_boxes = domain is not None and domain.type is DomainType.OBJECT_DETECTION
    if domain is not None and wants_boxes != (dataset.kind is Kind.DETECTION):
        raise CloudError(f"project {target.name!r} is {'a detection' if wants_boxes else 'a classification'} "
                         f"project; the labels of {model!r} are {dataset.kind.value}")
    tag_ids = run.tags(target.id, dataset.tags)
    return run.upload(target.id, dataset, tag_ids)
