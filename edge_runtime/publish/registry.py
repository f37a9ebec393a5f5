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

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ModelStoreError
from ..model.predictor import Predictor
from ..model.slot import WAIT_S, ModelSlot


class UnknownModel(ModelStoreError):
    """No served model answers this project id and published name."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Served:
    """A request's model, taken once: it runs on this predictor from start to finish."""

    name: str
    project: str | None  # None: answers any project id
    predictor: Predictor
    version: int | None = None  # None: named on the command line, not from the store


@dataclass
class Entry:
    """A served name: its project and the slot its versions are swapped in."""

    name: str
    project: str | None
    slot: ModelSlot[Predictor]

    def served(self, wait_s: float = WAIT_S) -> Served:
        predictor = self.slot.get(wait_s)
        active = self.slot.active
        return Served(self.name, self.project, predictor, active.version if active else None)


class Registry:
    def __init__(self, default: Entry, published: Sequence[Entry] = ()) -> None:
        self.default = default
        self._lock = threading.Lock()
        self.models: dict[str, Entry] = {default.name: default}
        for entry in published:
            self.models[entry.name] = entry

    @classmethod
    def single(cls, name: str, predictor: Predictor) -> Registry:
        return cls(Entry(name, None, ModelSlot(name, predictor)))

    def entry(self, name: str) -> Entry | None:
        return self.models.get(name)

    def add(self, entry: Entry) -> None:
        with self._lock:  # readers take `models` as it is: it is replaced, never changed in place
            self.models = {**self.models, entry.name: entry}

    def remove(self, name: str) -> None:
        with self._lock:
            if name == self.default.name:
                raise ModelStoreError(f"{name} is the default model; it cannot be removed while the server runs")
            self.models = {k: v for k, v in self.models.items() if k != name}

    def resolve(self, project: str, name: str, wait_s: float = WAIT_S) -> Served:
        """The model for this request; ModelUnavailable after `wait_s` while an unload-first swap loads it."""
        models = self.models
        if len(models) == 1:
            entry = self.default
        elif name in models:
            entry = models[name]
        else:
            raise UnknownModel(f"no model is published as {_shown(name)} (published: "
                               f"{', '.join(sorted(models))})", "NotFoundIteration")
        if entry.project is not None and entry.project != project:
            raise UnknownModel(f"{entry.name} answers project {entry.project}, not {_shown(project)}",
                               "NotFoundProject")
        return entry.served(wait_s)


def _shown(text: str, limit: int = 64) -> str:
    """A name from a request, quoted and cut short for an error message."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
