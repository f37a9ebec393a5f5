"""The Custom Vision training service, as edge-export uses it: one small typed protocol.

    client: TrainingClient = SdkClient.connect(load_credentials())  # the service, through its SDK
    client = FakeTrainingClient(export_zip)                          # in memory, for tests

Only the calls edge-export makes are here, with the fields it reads. Implementations
raise CloudError (one line, the service's own message and HTTP status) for anything the
service refuses; retrying is theirs to do.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_runtime.errors import EdgeRuntimeError

Progress = Callable[[str, int, int], None]

MAX_BATCH_IMAGES = 64  # the service's limits for one upload call
MAX_BATCH_TAGS = 20
UPLOADED = frozenset({"OK", "OKDuplicate"})  # image statuses meaning the service holds the image
TRAINED, FAILED = "Completed", "Failed"  # iteration statuses that end training
EXPORTED, EXPORT_FAILED = "Done", "Failed"  # export statuses that end an export


class CloudError(EdgeRuntimeError):
    """The Custom Vision service refused or failed a request."""


class Flavor(str, enum.Enum):
    """The ONNX exports edge-export asks for (the runtime loads both)."""

    ONNX = "ONNX"  # float32: the API calls it no flavor at all
    ONNX_FLOAT16 = "OnnxFloat16"

    @property
    def api_value(self) -> str | None:
        return None if self is Flavor.ONNX else self.value

    @classmethod
    def from_api(cls, value: str | None) -> Flavor | None:
        """The API's flavor string; None for flavors edge-export does not use."""
        if not value:
            return cls.ONNX
        return next((f for f in cls if f.value.lower() == value.lower()), None)


class DomainType(str, enum.Enum):
    CLASSIFICATION = "Classification"
    OBJECT_DETECTION = "ObjectDetection"


@dataclass(frozen=True)
class Domain:
    id: str
    name: str
    type: DomainType
    exportable: bool


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    domain_id: str


@dataclass(frozen=True)
class Tag:
    id: str
    name: str


@dataclass(frozen=True)
class NewRegion:
    tag_id: str
    left: float  # normalised to the image
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class NewImage:
    name: str
    data: bytes
    tag_ids: tuple[str, ...] = ()
    regions: tuple[NewRegion, ...] = ()


@dataclass(frozen=True)
class UploadResult:
    status: str  # "OK", "OKDuplicate", or the service's reason ("ErrorImageSize", ...)
    image_id: str = ""


@dataclass(frozen=True)
class Iteration:
    id: str
    name: str
    status: str  # "Training", "Completed", "Failed", ...
    publish_name: str = ""
    trained_at: str = ""  # ISO 8601, when it finished training


@dataclass(frozen=True)
class TagPerformance:
    name: str
    precision: float
    recall: float
    average_precision: float


@dataclass(frozen=True)
class Performance:
    precision: float
    recall: float
    average_precision: float
    per_tag: tuple[TagPerformance, ...]


@dataclass(frozen=True)
class Export:
    platform: str
    flavor: Flavor | None  # None: a flavor edge-export does not use
    status: str  # "Exporting", "Done", "Failed"
    download_uri: str = ""


class TrainingClient(Protocol):
    def domains(self) -> list[Domain]: ...

    def projects(self) -> list[Project]: ...

    def create_project(self, name: str, domain_id: str, classification: str | None) -> Project:
        """`classification` is "Multiclass", "Multilabel", or None for detection."""
        ...

    def tags(self, project_id: str) -> list[Tag]: ...

    def create_tag(self, project_id: str, name: str) -> Tag: ...

    def upload(self, project_id: str, images: Sequence[NewImage]) -> list[UploadResult]:
        """One batch (at most 64 images and 20 tags); one result per image, in order."""
        ...

    def train(self, project_id: str, training_type: str, budget_hours: int) -> Iteration: ...

    def iteration(self, project_id: str, iteration_id: str) -> Iteration: ...

    def iterations(self, project_id: str) -> list[Iteration]: ...

    def performance(self, project_id: str, iteration_id: str, threshold: float,
                    overlap_threshold: float | None) -> Performance: ...

    def exports(self, project_id: str, iteration_id: str) -> list[Export]: ...

    def export(self, project_id: str, iteration_id: str, flavor: Flavor) -> None: ...

    def publish(self, project_id: str, iteration_id: str, name: str, prediction_resource_id: str) -> None: ...

    def download(self, uri: str, target: Path, progress: Progress | None = None) -> Path:
        """Fetch a finished export to `target` (never leaving a partial file under that name)."""
        ...
