"""Open a Custom Vision export: a zip, an unpacked folder, or a lone .onnx with labels.

This module only finds and checks files (manifest, labels, metadata JSON, SHA-1). What
the model computes is decided in `spec.py`, once onnxruntime has opened it.

    bundle = open_bundle("export.zip")
    bundle.model_path, bundle.labels, bundle.manifest["DomainType"]
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BundleError, ChecksumError, LabelsError
from .archive import MAX_TOTAL_BYTES
from .bundle_cache import unpacked
from .hashing import TooLarge, file_sha1
from .limits import MAX_JSON_BYTES, MAX_LABELS_BYTES, read_file_capped

MANIFEST = "cvexport.manifest"
DEFAULT_LABELS = "labels.txt"
DEFAULT_METADATA = "metadata_properties.json"
BUNDLE_INFO = "bundle.json"  # written by edge-export; optional
# Manifest keys that name files in the bundle, and the others that hold text.
FILE_KEYS = ("ModelFileName", "LabelFileName", "MetadataPropsFileName")
TEXT_KEYS = (*FILE_KEYS, "ModelFileSHA1", "DomainType", "IterationId", "Platform", "Flavor", "ExporterVersion",
             "ExportedDate", "SchemaVersion")


@dataclass(frozen=True)
class Bundle:
    source: Path  # what the user named
    root: Path  # the folder holding the files (for a zip, its folder in the cache: bundle_cache.py)
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
    try:
        if not source.exists():
            raise BundleError(f"{source}: no such file or folder")
        if source.is_dir():
            return _open_folder(source, source)
        is_zip = zipfile.is_zipfile(source)
    except OSError as exc:
        raise BundleError(f"{source}: {exc.strerror or exc}") from exc
    if is_zip:
        return _open_folder(_export_root(unpacked(source)), source)
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
    manifest = _read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else {}
    if model_override is not None and manifest.get("ModelFileName") not in (None, model_override.name):
        manifest = {}  # that manifest describes another model in the same folder
    model_path = model_override or _find_model(root, manifest)
    _verify_sha1(model_path, manifest.get("ModelFileSHA1"))

    labels_path = _inside(root, manifest, "LabelFileName", DEFAULT_LABELS)
    labels = _read_labels(labels_path) if labels_path.is_file() else None

    metadata_path = _inside(root, manifest, "MetadataPropsFileName", DEFAULT_METADATA)
    metadata: dict[str, str] = {}
    if metadata_path.is_file():
        raw = _read_json(metadata_path)
        metadata = {str(k): str(v) for k, v in raw.items()}
    info = _read_json(root / BUNDLE_INFO) if (root / BUNDLE_INFO).is_file() else {}
    return Bundle(source, root, model_path, labels, manifest, metadata, info)


def _inside(root: Path, manifest: dict[str, Any], key: str, default: str) -> Path:
    """The file the manifest names under `key` (or `default`), refused if it leaves `root`."""
    name = manifest.get(key) or default
    parts = PurePosixPath(name.replace("\\", "/")).parts
    path = root / name
    outside = name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]) or "\0" in name
    try:
        outside = outside or not path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        outside = True
    if outside:
        raise BundleError(f"{MANIFEST}: {key} {name!r} is outside the bundle folder; only names inside it are allowed")
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = _read_json(path)
    for key in TEXT_KEYS:
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise BundleError(f"{path.name}: {key} should be text, not {type(manifest[key]).__name__}")
    return manifest


def _find_model(root: Path, manifest: dict[str, Any]) -> Path:
    name = manifest.get("ModelFileName")
    if name:
        path = _inside(root, manifest, "ModelFileName", name)
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
    try:
        actual = file_sha1(model_path, max_bytes=MAX_TOTAL_BYTES)
    except OSError as exc:
        raise BundleError(f"{model_path}: cannot read: {exc.strerror or exc}") from exc
    except TooLarge:
        raise BundleError(f"{model_path.name}: larger than the {MAX_TOTAL_BYTES}-byte limit for a model") from None
    if actual != str(expected).strip().lower():
        raise ChecksumError(
            f"{model_path.name}: SHA-1 {actual} does not match the manifest's "
            f"ModelFileSHA1 {expected}; the file is corrupt or was changed"
        )


def _read_labels(path: Path) -> tuple[str, ...]:
    try:
        lines = read_file_capped(path, MAX_LABELS_BYTES, LabelsError).decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
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
    data = read_file_capped(path, MAX_JSON_BYTES, BundleError)
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints of too many digits
        raise BundleError(f"{path.name}: not valid JSON: {exc}") from exc
    except RecursionError:
        raise BundleError(f"{path.name}: not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise BundleError(f"{path.name}: expected a JSON object")
    return value
