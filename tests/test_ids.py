"""Project, iteration and tag UUIDs: recorded ones win, the rest derive from the model's SHA-1."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from edge_runtime.model.bundle import open_bundle
from edge_runtime.model.ids import NAMESPACE, ModelIds
from edge_runtime.model.predictor import Predictor
from tests import models
from tests.conftest import solid

RED = (0, 0, 255)


def derived(model: bytes, name: str) -> str:
    """The rule the README documents, written out independently."""
    return str(uuid.uuid5(uuid.uuid5(NAMESPACE, hashlib.sha1(model).hexdigest()), name))


def test_ids_not_recorded_are_derived_from_the_model_and_stable(tmp_path: Path) -> None:
    model = models.color_classifier()
    first = models.write_export(tmp_path / "a", model, models.COLOR_TAGS, manifest=False)
    copy = shutil.copytree(first, tmp_path / "b")  # another device, another path: the same ids
    ids, again = ModelIds.of(open_bundle(first)), ModelIds.of(open_bundle(copy))
    assert ids == again
    assert ids.project == derived(model, "project")
    assert ids.iteration == derived(model, "iteration")
    assert ids.tag_ids(("red", "blue")) == (derived(model, "tag:red"), derived(model, "tag:blue"))
    other = models.write_export(tmp_path / "c", models.color_classifier(multilabel=True), models.COLOR_TAGS,
                                manifest=False)
    assert ModelIds.of(open_bundle(other)).tag_ids(("red",)) != ids.tag_ids(("red",))  # another model


def test_recorded_ids_win_and_bad_records_fall_back_per_tag(tmp_path: Path) -> None:
    model = models.color_classifier()
    folder = models.write_export(tmp_path / "e", model, models.COLOR_TAGS)  # manifest IterationId ...0001
    blue_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    (folder / "bundle.json").write_text(json.dumps({
        "source": {"projectId": project_id.upper()}, "tagIds": [blue_id, "", "not-a-uuid"]}))
    ids = ModelIds.of(open_bundle(folder))
    assert (ids.project, ids.iteration) == (project_id, "00000000-0000-0000-0000-000000000001")
    assert ids.tag_ids(models.COLOR_TAGS) == (blue_id, derived(model, "tag:green"), derived(model, "tag:red"))
    assert ids.tag_ids(("blue", "green")) == (derived(model, "tag:blue"), derived(model, "tag:green"))  # stale record

    result = Predictor.load(folder).predict(solid((255, 0, 0)))
    body = result.to_json()
    assert (body["project"], body["predictions"][0]["tagName"], body["predictions"][0]["tagId"]) == (
        project_id, "blue", blue_id)
    assert result.to_json(project="configured")["project"] == "configured"  # server.project still overrides


def test_a_zipmap_model_without_labels_gets_ids_for_the_tags_it_names(tmp_path: Path) -> None:
    model = models.legacy_zipmap_classifier()
    predictor = Predictor.load(models.write_export(tmp_path / "z", model, None))
    top = predictor.predict(solid(RED)).predictions[0]
    assert (top.tag_name, top.tag_id) == ("red", derived(model, "tag:red"))
