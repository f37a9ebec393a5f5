"""The held-out split: every tag is represented, multilabel sets included."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.metrics import classification_metrics
from exporter.split import split


def multilabel_targets() -> np.ndarray:
    """60 images, 3 tags: 'shelf' on 20 images, 'gap' overlapping it, 'price' scattered, 5 untagged."""
    rng = np.random.default_rng(7)
    y = np.zeros((60, 3), np.float32)
    y[:20, 0] = 1
    y[10:40, 1] = 1
    y[rng.choice(55, 15, replace=False), 2] = 1
    return y


@pytest.mark.parametrize("seed", range(20))
def test_a_multilabel_split_holds_out_about_a_fifth_of_every_tag(seed):
    y = multilabel_targets()
    train, held_out = split(y, 0.2, multilabel=True, seed=seed)
    assert sorted([*train, *held_out]) == list(range(60))  # disjoint and complete
    assert abs(len(held_out) - 12) <= 1
    for tag, count in enumerate(y.sum(0)):
        assert abs(y[held_out, tag].sum() - 0.2 * count) <= 1, f"tag {tag}"  # 'shelf': 4 of its 20
        assert y[train, tag].sum() >= 0.8 * count - 1


def test_a_multiclass_split_is_stratified():
    y = np.eye(3, dtype=np.float32)[np.repeat([0, 1, 2], [30, 15, 5])]
    train, held_out = split(y, 0.2, multilabel=False, seed=0)
    assert len(held_out) == 10 and len(set(train) | set(held_out)) == 50
    assert list(y[held_out].sum(0)) == [6, 3, 1]


def test_a_tag_with_no_evaluated_image_is_warned_about():
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    scores = np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.1], [0.7, 0.6, 0.2]], np.float32)
    metrics = classification_metrics(truth, scores, ["red", "green", "blue"], multiclass=False)
    assert metrics.warnings == ("no evaluated image carries tag 'blue', so its recall and AP are not measured",)
    assert "warning: no evaluated image carries tag 'blue'" in metrics.table()
    assert metrics.to_json()["warnings"] == list(metrics.warnings)
    measured = classification_metrics(truth[:, :2], scores[:, :2], ["red", "green"], multiclass=False)
    assert measured.warnings == () and "warning" not in measured.table()


def test_confusion_matrix_columns_are_labelled():
    truth = np.eye(3, dtype=np.float32)[[0, 0, 1, 2, 2]]
    scores = np.eye(3, dtype=np.float32)[[0, 1, 1, 2, 0]]
    table = classification_metrics(truth, scores, ["cat", "dog", "fox"]).table().splitlines()
    start = table.index("confusion matrix (rows: true tag, columns: top prediction)")
    assert table[start + 1].split() == ["cat", "dog", "fox"]
    assert table[start + 2].split() == ["cat", "1", "1", "0"]
    assert table[start + 4].split() == ["fox", "1", "0", "1"]

    long_names = ["a rather long tag name", "dog", "fox"]
    table = classification_metrics(truth, scores, long_names).table().splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("confusion matrix"))
    assert "numbered as the rows" in table[start]
    assert table[start + 1].split() == ["0", "1", "2"]
    assert table[start + 2].split() == ["0", "a", "rather", "long", "tag", "name", "1", "1", "0"]
    assert table[start + 4].split() == ["2", "fox", "1", "0", "1"]
