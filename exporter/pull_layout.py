"""The layout files of a pull, streamed from its state: memory holds one record at a time.

    labels.json                 multilabel: {"images": [{"file", "tags", "metadata"}]}
    annotations.json            detection: COCO, boxes in pixels of each image
    _predictions/predictions.json
        {"images": [{"id", "file", "width", "height", "created", "iteration",
                     "predictions": [{"probability", "tagId", "tagName", "tagType",
                                      "boundingBox": null | {"left", "top", "width", "height"},  # normalised
                                      "box": null | [x, y, width, height]}]}]}               # in pixels

`file` is beside predictions.json. A stored prediction's entries keep the keys of the service's prediction JSON (what
`events export --samples` writes for each sample), with `box` added in pixels of the
image, so a labelling tool reads both alike.

Each file is written to FILE.part and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .pull_state import PullState, Record


@contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("w", encoding="utf-8") as f:
        yield f
    os.replace(partial, path)


def _array(f: IO[str], entries: Iterable[Any]) -> None:
    f.write("[")
    for n, entry in enumerate(entries):
        f.write(("\n " if n == 0 else ",\n ") + json.dumps(entry, allow_nan=False))
    f.write("]")


def write_object(path: Path, head: dict[str, Any], arrays: dict[str, Callable[[], Iterable[Any]]]) -> None:
    """`head`'s keys, then each array streamed from its generator (called once, in order)."""
    with _replacing(path) as f:
        f.write("{")
        items = [(k, None) for k in head] + [(k, v) for k, v in arrays.items()]
        for n, (key, make) in enumerate(items):
            f.write(("\n" if n == 0 else ",\n") + json.dumps(key) + ": ")
            if make is None:
                f.write(json.dumps(head[key], allow_nan=False))
            else:
                _array(f, make())
        f.write("\n}\n")


def write_layout(out: Path, state: PullState, kind: str, tags: dict[str, dict[str, Any]]) -> None:
    """labels.json or annotations.json for the tagged images this run saw."""
    if kind == "multilabel":
        write_object(out / "labels.json", {}, {"images": lambda: (
            {"file": r.file, "tags": [tags[t]["name"] for t in r.tags], "metadata": r.metadata}
            for r in state.records("images", "tagged"))})
    elif kind == "detection":
        regular = [t for t in tags.values() if t["type"] != "Negative"]
        category = {t["id"]: n for n, t in enumerate(regular, 1)}
        write_object(out / "annotations.json", {}, {
            "images": lambda: ({"id": n, "file_name": r.file, "width": r.width, "height": r.height,
                                "customvision_id": r.id, "metadata": r.metadata}
                               for n, r in enumerate(state.records("images", "tagged"), 1)),
            "annotations": lambda: _annotations(state.records("images", "tagged"), category),
            "categories": lambda: ({"id": category[t["id"]], "name": t["name"], "customvision_id": t["id"]}
                                   for t in regular)})


def _annotations(records: Iterable[Record], category: dict[str, int]) -> Iterator[dict[str, Any]]:
    count = 0
    for n, r in enumerate(records, 1):
        for tag_id, left, top, width, height in r.regions:
            box = [left * r.width, top * r.height, width * r.width, height * r.height]
            count += 1
            yield {"id": count, "image_id": n, "category_id": category[tag_id], "bbox": [round(v, 2) for v in box],
                   "area": round(box[2] * box[3], 2), "iscrowd": 0}


def write_predictions(path: Path, state: PullState) -> None:
    write_object(path, {}, {"images": lambda: (
        {"id": r.id, "file": Path(r.file).name, "width": r.width, "height": r.height, **r.extra}
        for r in state.records("predictions", "predictions"))})
