"""Opening exports, and every way an export can be wrong."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from edge_runtime.errors import (
    BundleError,
    ChecksumError,
    LabelsError,
    MetadataError,
    NotOnnxError,
    ProviderError,
    UnsafeArchiveError,
    UnsupportedModelError,
)
from edge_runtime.model.bundle import open_bundle
from edge_runtime.model.onnx_header import read_opsets
from edge_runtime.model.predictor import Predictor
from edge_runtime.model.session import PROVIDER_PREFERENCE, resolve_providers
from tests import models


def test_manifest_labels_and_metadata_are_read(exports):
    bundle = open_bundle(exports["modern"])
    assert bundle.labels == models.COLOR_TAGS
    assert bundle.manifest["DomainType"] == "Classification"
    assert bundle.metadata["CustomVision.Preprocess.ResizeMethod"] == "ByShorterSide"


def test_sha1_mismatch_is_refused(tmp_path):
    folder = models.write_export(tmp_path / "e", models.color_classifier(), models.COLOR_TAGS, sha1="0" * 40)
    with pytest.raises(ChecksumError, match="does not match the manifest"):
        open_bundle(folder)


def test_a_file_that_is_not_onnx(tmp_path):
    folder = models.write_export(tmp_path / "e", b"\x08\x01garbage that is not protobuf" * 10, models.COLOR_TAGS)
    with pytest.raises(NotOnnxError, match="not an ONNX model"):
        Predictor.load(folder)


def test_a_2018_onnx10_export_is_explained(tmp_path):
    folder = models.write_export(tmp_path / "e", models.onnx10_model(), models.COLOR_TAGS)
    with pytest.raises(UnsupportedModelError, match=r"ONNX10.*opset 1.*re-export"):
        Predictor.load(folder)


def test_opsets_are_read_from_the_wire_format(exports):
    assert read_opsets(exports["legacy"] / "model.onnx") == {"": 7, "ai.onnx.ml": 1}
    assert read_opsets(exports["modern"] / "model.onnx") == {"": models.MODERN_OPSET}


def test_labels_that_do_not_match_the_outputs(tmp_path):
    folder = models.write_export(tmp_path / "e", models.color_classifier(), ("a", "b"))
    with pytest.raises(LabelsError, match="2 tags but output model_output has 3 scores"):
        Predictor.load(folder)
    yolo = models.write_export(tmp_path / "y", models.yolo_detector(), ("a", "b", "c"))
    with pytest.raises(LabelsError, match="35 channels"):
        Predictor.load(yolo)
    legacy = models.write_export(tmp_path / "l", models.legacy_zipmap_classifier(), ("red", "green", "purple"))
    with pytest.raises(LabelsError, match="does not match the model's own tag names"):
        Predictor.load(legacy)


def test_missing_labels(tmp_path):
    folder = models.write_export(tmp_path / "e", models.color_classifier(), None)
    with pytest.raises(LabelsError, match="no labels.txt"):
        Predictor.load(folder)


@pytest.mark.parametrize(("key", "value"), [
    ("CustomVision.Preprocess.ResizeMethod", "Letterbox"),
    ("Image.BitmapPixelFormat", "Bgra8"),
    ("Image.NominalPixelRange", "Normalized_1_1"),
    ("CustomVision.Postprocess.Method", "Segmentation"),
    ("CustomVision.Preprocess.CropWidth", "wide"),
    ("CustomVision.Preprocess.NormalizeMean", "[0.5, 0.5]"),
    ("CustomVision.Preprocess.MinScale", "0.5"),
])
def test_unknown_metadata_values_name_the_key(tmp_path, key, value):
    meta = models.modern_metadata(**{key: value})
    folder = models.write_export(tmp_path / "e", models.color_classifier(metadata=meta), models.COLOR_TAGS)
    with pytest.raises(MetadataError, match=key.replace(".", r"\.")):
        Predictor.load(folder)


def test_metadata_file_fills_in_what_the_model_lacks(tmp_path):
    bare = models.color_classifier(metadata={})
    folder = models.write_export(tmp_path / "e", bare, models.COLOR_TAGS, metadata=models.modern_metadata())
    assert Predictor.load(folder, warm_up=False).spec.input.target_width == 256


def test_zip_with_path_escape_is_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.onnx", models.color_classifier())
        zf.writestr("../../outside.txt", "gotcha")
    with pytest.raises(UnsafeArchiveError, match="outside the bundle folder"):
        open_bundle(path)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_zip_with_absolute_path_or_symlink_is_refused(tmp_path):
    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/etc/cron.d/x", "x")
    with pytest.raises(UnsafeArchiveError):
        open_bundle(absolute)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("labels.txt")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        open_bundle(link)


def test_zip_bomb_is_refused(tmp_path):
    from edge_runtime.model.archive import safe_extract

    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", b"\0" * 5_000_000)
    with pytest.raises(UnsafeArchiveError, match="more than"):
        safe_extract(path, tmp_path / "out", max_total_bytes=1_000_000)


def test_zip_that_wraps_the_export_in_a_folder(exports, tmp_path):
    path = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in exports["modern"].iterdir():
            zf.write(f, f"export/{f.name}")
    assert open_bundle(path).labels == models.COLOR_TAGS


def test_a_corrupt_zip(tmp_path):
    path = tmp_path / "bad.zip"
    good = models.zip_folder(models.write_export(tmp_path / "e", models.color_classifier(), models.COLOR_TAGS),
                             tmp_path / "good.zip")
    path.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(BundleError):
        open_bundle(path)


def test_several_models_and_no_manifest(tmp_path):
    folder = models.write_export(tmp_path / "e", models.color_classifier(), models.COLOR_TAGS, manifest=False)
    (folder / "other.onnx").write_bytes(models.color_classifier())
    with pytest.raises(BundleError, match="several .onnx files"):
        open_bundle(folder)


def test_bad_manifest_json(tmp_path):
    folder = models.write_export(tmp_path / "e", models.color_classifier(), models.COLOR_TAGS)
    (folder / "cvexport.manifest").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(folder)


def test_manifest_with_bom_and_float_sizes(tmp_path):
    model = models.color_classifier()
    folder = models.write_export(tmp_path / "e", model, models.COLOR_TAGS)
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    (folder / "cvexport.manifest").write_bytes(b"\xef\xbb\xbf" + json.dumps(manifest).encode())
    assert open_bundle(folder).manifest["ModelFileSHA1"] == hashlib.sha1(model).hexdigest()


def test_providers_are_chosen_in_order_of_speed():
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert resolve_providers(None, available) == [*PROVIDER_PREFERENCE[:2], "CPUExecutionProvider"]
    assert resolve_providers(["cuda"], available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["cpu"], available) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="openvino.*not available"):
        resolve_providers(["openvino"], available)


def test_threads_and_provider_reach_the_session(exports):
    predictor = Predictor.load(exports["modern"], providers=["cpu"], intra_op_threads=1)
    assert predictor.model.providers == ["CPUExecutionProvider"]
    assert predictor.model.session.get_session_options().intra_op_num_threads == 1
