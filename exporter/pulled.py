"""What `pull` wrote beside a dataset (project.json), read back: the service's tag ids, and
its own figures for an iteration, set beside ours.

    pulled_tag_ids(Path("shelf-data"))                                  # {"red": "<tag id>", ...}
    figures = service_figures(Path("shelf-data/project.json"))          # the newest trained iteration
    figures = service_figures(Path("shelf-data/project.json"), "Iteration 2")   # or by name or id
    print(side_by_side(evaluate(predictor, dataset), figures, "40 images of shelf-data"))

A model trained locally from a pull reports the service's tag ids (bundle.json `tagIds`),
so clients that keyed on them go on working.

Custom Vision measured its figures on images it held out itself, at the threshold that
`pull` asked for (0.5); `evaluate` measures ours on the dataset it is given. The table
says both, so that nobody reads the two columns as one experiment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import DatasetError
from .evaluate import DetectionMetrics
from .metrics import Evaluation, _pct

MAX_PROJECT_JSON = 16 * 1024 * 1024  # tags and iterations only: a real one is a few kB


@dataclass(frozen=True)
class ServiceFigures:
    iteration: str  # its name
    iteration_id: str
    threshold: float
    precision: float
    recall: float
    average_precision: float
    per_tag: dict[str, tuple[float, float, float]]  # tag -> precision, recall, AP

    def to_json(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "iterationId": self.iteration_id, "threshold": self.threshold,
                "precision": self.precision, "recall": self.recall, "averagePrecision": self.average_precision,
                "perTag": {t: dict(zip(("precision", "recall", "averagePrecision"), v, strict=True))
                           for t, v in self.per_tag.items()}}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _number(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise DatasetError(f"{what} is not a figure from 0 to 1")
    return float(value)


def split_against(text: str) -> tuple[Path, str | None]:
    """`FILE` or `FILE:ITERATION` (an iteration's name or id)."""
    path, sep, iteration = text.rpartition(":")
    if sep and path and not Path(text).exists():
        return Path(path), iteration or None
    return Path(text), None


def read_project(path: Path) -> dict[str, Any]:
    """project.json as pull wrote it; DatasetError (one line) for anything else."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PROJECT_JSON + 1)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_PROJECT_JSON:
        raise DatasetError(f"{path}: over {MAX_PROJECT_JSON // 2**20} MB; not a project.json that pull wrote")
    try:
        info = json.loads(raw, parse_constant=_refuse_constant)
        if not isinstance(info, dict) or not isinstance(info["tags"], list) \
                or not isinstance(info["iterations"], list):
            raise TypeError("not an object with tags and iterations")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a project.json that pull wrote ({exc})") from None
    return info


def pulled_tag_ids(root: Path) -> dict[str, str]:
    """Tag name -> the service's tag id, from ROOT/project.json; {} when the dataset was not pulled."""
    path = root / "project.json"
    if not path.is_file():
        return {}
    tags = read_project(path)["tags"]
    return {t["name"]: t["id"] for t in tags
            if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("id"), str)}


def service_figures(path: Path, iteration: str | None = None) -> ServiceFigures:
    """The figures of one iteration (by name or id; default: the newest trained one)."""
    iterations = [it for it in read_project(path)["iterations"] if isinstance(it, dict) and it.get("performance")]
    if iteration is not None:
        chosen = [it for it in iterations if iteration in (it.get("id"), it.get("name"))]
        if not chosen:
            names = ", ".join(str(it.get("name")) for it in iterations) or "none"
            raise DatasetError(f"{path}: no trained iteration named {iteration!r} (trained: {names})")
        it = chosen[0]
    elif not iterations:
        raise DatasetError(f"{path}: no iteration with the service's figures (was one trained?)")
    else:  # the newest: ISO 8601 times sort as text; without them, the first listed
        it = max(iterations, key=lambda i: str(i.get("trainedAt") or ""))
    name = str(it.get("name") or it.get("id"))
    try:
        perf = it["performance"]
        what = f"{path}: iteration {name!r}"
        per_tag = {str(t["name"]): (_number(t["precision"], f"{what}: a precision"),
                                    _number(t["recall"], f"{what}: a recall"),
                                    _number(t["average_precision"], f"{what}: an AP")) for t in perf["perTag"]}
        return ServiceFigures(name, str(it.get("id")), _number(perf["threshold"], f"{what}: the threshold"),
                              _number(perf["precision"], f"{what}: the precision"),
                              _number(perf["recall"], f"{what}: the recall"),
                              _number(perf["averagePrecision"], f"{what}: the AP"), per_tag)
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: iteration {name!r} has no usable figures ({exc})") from None


def side_by_side(ours: Evaluation | DetectionMetrics, theirs: ServiceFigures, where: str) -> str:
    """One row a tag: our precision, recall and AP beside the service's ("-" where one has none)."""
    nan = float("nan")
    if isinstance(ours, Evaluation):
        mine = {t.tag: (t.precision, t.recall, t.average_precision) for t in ours.per_tag}
        overall = (ours.precision, ours.recall, ours.average_precision)
        threshold = ours.threshold
    else:  # detection: AP at IoU 0.5, and precision and recall where the metrics have them
        decided = {t: (p, r) for t, p, r, *_ in getattr(ours, "decisions", ())}
        mine = {t: (*decided.get(t, (nan, nan)), ap) for t, ap in ours.per_tag}
        overall = (getattr(ours, "precision", nan), getattr(ours, "recall", nan), ours.map50)
        threshold = getattr(ours, "threshold", theirs.threshold)
    tags = list(mine) + [t for t in theirs.per_tag if t not in mine]
    width = max([len(t) for t in tags] + [7])
    lines = [f"{'':<{width}}  {'precision':^15}  {'recall':^15}  {'AP':^15}",
             f"{'tag':<{width}}  " + "  ".join(["   here service"] * 3)]

    def line(tag: str, a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
        return f"{tag:<{width}}  " + "  ".join(f"{_pct(x):>7} {_pct(y):>7}" for x, y in zip(a, b, strict=True))

    for tag in tags:
        lines.append(line(tag, mine.get(tag, (nan, nan, nan)), theirs.per_tag.get(tag, (nan, nan, nan))))
    lines.append(line("overall", overall, (theirs.precision, theirs.recall, theirs.average_precision)))
    lines.append(f"here: {where}, threshold {threshold:.2f}; service: Custom Vision's {theirs.iteration!r} on "
                 f"the images it held out, threshold {theirs.threshold:.2f}")
    if isinstance(ours, Evaluation) and not math.isclose(threshold, theirs.threshold):
        lines.append("warning: the two thresholds differ, so precision and recall do not compare")
    return "\n".join(lines)
