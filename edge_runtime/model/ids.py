"""The UUIDs a prediction reports: project, iteration and one per tag.

The service's schema types them as UUIDs, and its SDKs in typed languages parse them
(C# `Guid`, Java `UUID`), so every answer carries real UUIDs, stable across restarts:

- recorded ids win: the manifest's `IterationId`, and from `bundle.json` (written by
  `edge-export`) the project's id (`source.projectId`), the iteration and the service's
  tag ids (`tagIds`, in label order);
- anything not recorded, or recorded as something that is not a UUID, is derived:
  `uuid5(uuid5(NAMESPACE, model SHA-1), "project" | "iteration" | "tag:" + name)`.
  The same model file therefore reports the same ids on every device.

    ids = ModelIds.of(bundle)
    ids.project, ids.iteration, ids.tag_ids(("cat", "dog"))
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .bundle import Bundle
from .hashing import file_sha1

# Fixed once: changing it would change every derived id.
NAMESPACE = uuid.UUID("2b406d22-ce7c-4a01-8d00-b5070444408a")


def as_uuid(value: object) -> str | None:
    """The canonical lower-case form of a UUID, or None when `value` is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class ModelIds:
    namespace: uuid.UUID  # from the model file's SHA-1
    project: str
    iteration: str
    recorded_tags: tuple[str, ...] = ()  # the service's tag ids in label order, as bundle.json holds them

    @classmethod
    def of(cls, bundle: Bundle) -> ModelIds:
        sha1 = str(bundle.manifest.get("ModelFileSHA1") or "").strip().lower() or file_sha1(bundle.model_path)
        namespace = uuid.uuid5(NAMESPACE, sha1)
        source = bundle.info.get("source")
        recorded_project = source.get("projectId") if isinstance(source, dict) else None
        iteration = as_uuid(bundle.manifest.get("IterationId")) or as_uuid(bundle.info.get("iteration"))
        return cls(
            namespace=namespace,
            project=as_uuid(recorded_project) or str(uuid.uuid5(namespace, "project")),
            iteration=iteration or str(uuid.uuid5(namespace, "iteration")),
            recorded_tags=bundle.tag_ids or (),
        )

    def tag_id(self, name: str) -> str:
        return str(uuid.uuid5(self.namespace, f"tag:{name}"))

    def tag_ids(self, labels: Sequence[str]) -> tuple[str, ...]:
        """One UUID per label: the recorded one when the record matches the labels, else derived."""
        recorded = self.recorded_tags if len(self.recorded_tags) == len(labels) else ()
        return tuple(
            (as_uuid(recorded[i]) if recorded else None) or self.tag_id(name) for i, name in enumerate(labels)
        )
