"""project.json read back: the service's tag ids and figures, and what a hostile file gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.dataset import DatasetError
from exporter.evaluate import DetectionMetrics
from exporter.metrics import Evaluation, TagMetrics
from exporter.pulled import MAX_PROJECT_JSON, pulled_tag_ids, service_figures, side_by_side, split_against


def performance(p: float = 0.9, r: float = 0.8, ap: float = 0.95) -> dict[str, object]:
    return {"threshold": 0.5, "precision": p, "recall": r, "averagePrecision": ap,
            "perTag": [{"name": "red", "precision": p, "recall": r, "average_precision": ap},
                       {"name": "Negative", "precision": 0.5, "recall": 0.5, "average_precision": 0.5}]}


def project(tmp_path: Path, iterations: list[dict[str, object]], text: str | None = None) -> Path:
    path = tmp_path / "project.json"
    body = {"project": {"id": "p", "name": "shelf"}, "kind": "classification",
            "tags": [{"id": "t-red", "name": "red", "type": "Regular"}, {"id": "t-neg", "name": "Negative"}],
            "iterations": iterations}
    path.write_text(text if text is not None else json.dumps(body))
    return path


def test_the_newest_trained_iteration_is_the_default_and_one_is_chosen_by_name_or_id(tmp_path):
    path = project(tmp_path, [
        {"id": "i-1", "name": "Iteration 1", "trainedAt": "2024-01-01T00:00:00", "performance": performance(0.5)},
        {"id": "i-3", "name": "Iteration 3", "status": "Training"},
        {"id": "i-2", "name": "Iteration 2", "trainedAt": "2024-05-01T00:00:00", "performance": performance(0.7)}])
    assert service_figures(path).iteration == "Iteration 2" and service_figures(path).precision == 0.7
    assert service_figures(path, "i-1").precision == 0.5 and service_figures(path, "Iteration 1").iteration_id == "i-1"
    with pytest.raises(DatasetError, match="no trained iteration named 'Iteration 3' .trained: Iteration 1, "):
        service_figures(path, "Iteration 3")
    assert pulled_tag_ids(tmp_path) == {"red": "t-red", "Negative": "t-neg"}
    assert pulled_tag_ids(tmp_path / "elsewhere") == {}


def test_against_names_a_file_and_maybe_an_iteration(tmp_path):
    assert split_against("shelf/project.json") == (Path("shelf/project.json"), None)
    assert split_against("shelf/project.json:Iteration 2") == (Path("shelf/project.json"), "Iteration 2")
    odd = tmp_path / "a:b.json"
    odd.write_text("{}")
    assert split_against(str(odd)) == (odd, None)  # a colon in an existing file's name is its name


@pytest.mark.parametrize("text, why", [
    ("not json", "not a project.json that pull wrote"),
    ('{"tags": [], "iterations": [{"name": "x", "performance": {"threshold": 0.5, "precision": NaN}}]}',
     "NaN is not a number JSON allows"),
    ('{"tags": [], "iterations": [{"name": "x", "performance": {"threshold": 0.5, "precision": 1e999, "recall": 0, '
     '"averagePrecision": 0, "perTag": []}}]}', "the precision is not a figure from 0 to 1"),
    ('{"tags": [], "iterations": [{"name": "x", "performance": {"threshold": 0.5, "precision": 7, "recall": 0, '
     '"averagePrecision": 0, "perTag": []}}]}', "the precision is not a figure from 0 to 1"),
    ('{"tags": [], "iterations": [{"name": "x", "performance": {"threshold": 0.5}}]}', "has no usable figures"),
    ('{"tags": {}, "iterations": []}', "not a project.json that pull wrote"),
    ('{"tags": [], "iterations": []}', "no iteration with the service's figures"),
    ("\xff\xfe", "not a project.json"),
])
def test_a_hostile_project_json_is_one_line_that_names_the_file(tmp_path, text, why):
    path = project(tmp_path, [], text)
    with pytest.raises(DatasetError, match=why) as caught:
        service_figures(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_an_oversized_project_json_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "project.json"
    with path.open("wb") as f:
        f.truncate(MAX_PROJECT_JSON + 1)
    with pytest.raises(DatasetError, match="over 16 MB"):
        service_figures(path)
    with pytest.raises(DatasetError, match="cannot read it"):
        service_figures(tmp_path / "missing.json")


def test_side_by_side_sets_each_tag_beside_the_services_and_warns_when_thresholds_differ(tmp_path):
    figures = service_figures(project(tmp_path, [{"id": "i", "name": "It", "performance": performance()}]))
    ours = Evaluation(0.5, 1.0, 0.75, 0.5, (TagMetrics("red", 1.0, 0.75, 0.5, 4), TagMetrics("blue", 0.25, 1.0,
                                                                                                 0.125, 2)))
    table = side_by_side(ours, figures, "6 images of shelf")
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:5]}
    assert rows["red"] == ["100.0%", "90.0%", "75.0%", "80.0%", "50.0%", "95.0%"]
    assert rows["blue"] == ["25.0%", "-", "100.0%", "-", "12.5%", "-"]  # the service has no figures for it
    assert rows["Negative"] == ["-", "50.0%", "-", "50.0%", "-", "50.0%"]
    assert "here: 6 images of shelf, threshold 0.50; service: Custom Vision's 'It'" in table
    assert "warning" not in table
    lower = Evaluation(0.3, 1.0, 0.75, 0.5, ours.per_tag)
    assert "warning: the two thresholds differ" in side_by_side(lower, figures, "x")
    boxes = side_by_side(DetectionMetrics(0.6, (("red", 0.6),)), figures, "x")
    assert [line.split()[1:] for line in boxes.splitlines() if line.startswith("red")] == [
        ["-", "90.0%", "-", "80.0%", "60.0%", "95.0%"]]
