"""Which loaded model answers a prediction request: by project id and published name, as the
Custom Vision Prediction API routes ask.

    registry = Registry(Served("shelf", None, predictor), [Served("door", "p-2", other, 3)])
    registry.resolve("p-2", "door").predictor

The rules, for applications moved from the cloud (they send their cloud project id and
names such as `Iteration1`):

- a model published without a project answers any project id;
- while one model is served, any published name reaches it (what the SDK drop-in of a
  single `serve MODEL` relies on);
- with several, the name must match one of them.

An unknown project or name is refused with the status and code the service gives
(NotFoundProject, NotFoundIteration), which the SDKs raise as CustomVisionErrorException.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ModelStoreError
from ..model.predictor import Predictor


class UnknownModel(ModelStoreError):
    """No served model answers this project id and published name."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Served:
    name: str
    project: str | None  # None: answers any project id
    predictor: Predictor
    version: int | None = None  # None: named on the command line, not from the store


class Registry:
    def __init__(self, default: Served, published: Sequence[Served] = ()) -> None:
        self.default = default
        self.models: dict[str, Served] = {default.name: default}
        for served in published:
            self.models[served.name] = served

    def resolve(self, project: str, name: str) -> Served:
        if len(self.models) == 1:
            served = self.default
        elif name in self.models:
            served = self.models[name]
        else:
            raise UnknownModel(f"no model is published as {_shown(name)} (published: "
                               f"{', '.join(sorted(self.models))})", "NotFoundIteration")
        if served.project is not None and served.project != project:
            raise UnknownModel(f"{served.name} answers project {served.project}, not {_shown(project)}",
                               "NotFoundProject")
        return served


def _shown(text: str, limit: int = 64) -> str:
    """A name from a request, quoted and cut short for an error message."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
