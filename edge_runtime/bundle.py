"""Open a Custom Vision export: a zip, an unpacked folder, or a lone .onnx with labels.

This module only finds and checks files (manifest, labels, metadata JSON, SHA-1). What
the model computes is decided in `spec.py`, once onnxruntime has opened it.

    bundle = open_bundle("export.zip")
    bundle.model_path, bundle.labels, bundle.manifest["DomainType"]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archive import safe_extract
from .errors import BundleError, ChecksumError, LabelsError
from .hashing import file_sha1

MANIFEST = "cvexport.manifest"
DEFAULT_LABELS = "labels.txt"
DEFAULT_METADATA = "metadata_properties.json"
BUNDLE_INFO = "bundle.json"  # written by edge-export; optional


@dataclass(frozen=True)
class Bundle:
    source: Path  # what the user named
    root: Path  # the folder holding the files (a private temporary folder for zips)
    model_path: Path
    labels: tuple[str, ...] | None
    manifest: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # from metadata_properties.json
    info: dict[str, Any] = field(default_factory=dict)  # from bundle.json

    @property
    def tag_ids(self) -> tuple[str, ...] | None:
        ids = self.info.get("tagIds")
        return tuple(str(i) for i in ids) if isinstance(ids, list) else None


def open_bundle(path: str | Path) -> Bundle:
    source = Path(path)
    if not source.exists():
        raise BundleError(f"{source}: no such file or folder")
    if source.is_dir():
        return _open_folder(source, source)
    if zipfile.is_zipfile(source):
        tmp = Path(tempfile.mkdtemp(prefix="edge-runtime-bundle-"))
        try:
            safe_extract(source, tmp)
            bundle = _open_folder(_export_root(tmp), source)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        weakref.finalize(bundle, shutil.rmtree, tmp, True)
        return bundle
    if source.suffix.lower() == ".onnx":
        return _open_folder(source.parent, source, model_override=source)
    raise BundleError(f"{source}: expected a Custom Vision export zip, a folder, or an .onnx file")


def _export_root(folder: Path) -> Path:
    """Exports have their files at the top; tolerate a zip that wraps them in one folder."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if not any(p.suffix == ".onnx" or p.name == MANIFEST for p in entries):
        subdirs = [p for p in entries if p.is_dir()]
        if len(subdirs) == 1:
            return subdirs[0]
    return folder


def _open_folder(root: Path, source: Path, model_override: Path | None = None) -> Bundle:
    manifest = _read_json(root / MANIFEST) if (root / MANIFEST).is_file() else {}
    if model_override is not None and manifest.get("ModelFileName") not in (None, model_override.name):
        manifest = {}  # that manifest describes another model in the same folder
    model_path = model_override or _find_model(root, manifest)
    _verify_sha1(model_path, manifest.get("ModelFileSHA1"))

    labels_path = root / (manifest.get("LabelFileName") or DEFAULT_LABELS)
    labels = _read_labels(labels_path) if labels_path.is_file() else None

    metadata_name = manifest.get("MetadataPropsFileName") or DEFAULT_METADATA
    metadata: dict[str, str] = {}
    if (root / metadata_name).is_file():
        raw = _read_json(root / metadata_name)
        metadata = {str(k): str(v) for k, v in raw.items()}
    info = _read_json(root / BUNDLE_INFO) if (root / BUNDLE_INFO).is_file() else {}
    return Bundle(source, root, model_path, labels, manifest, metadata, info)


def _find_model(root: Path, manifest: dict[str, Any]) -> Path:
    name = manifest.get("ModelFileName")
    if name:
        path = root / str(name)
        if not path.is_file():
            raise BundleError(f"{root}: the manifest names model file {name!r}, which is missing")
        return path
    models = sorted(root.glob("*.onnx"))
    if not models:
        raise BundleError(f"{root}: no .onnx model file found")
    if len(models) > 1:
        names = ", ".join(p.name for p in models)
        raise BundleError(f"{root}: several .onnx files ({names}) and no manifest to choose; name one")
    return models[0]


def _verify_sha1(model_path: Path, expected: object) -> None:
    if not expected:
        return
    actual = file_sha1(model_path)
    if actual != str(expected).strip().lower():
        raise ChecksumError(
            f"{model_path.name}: SHA-1 {actual} does not match the manifest's "
            f"ModelFileSHA1 {expected}; the file is corrupt or was changed"
        )


def _read_labels(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path.name}: cannot read labels: {exc}") from exc
    labels = [line.strip() for line in lines]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise LabelsError(f"{path.name} is empty")
    if "" in labels:
        raise LabelsError(f"{path.name}: line {labels.index('') + 1} is blank; one tag per line expected")
    return tuple(labels)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path.name}: not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BundleError(f"{path.name}: expected a JSON object")
    return value
