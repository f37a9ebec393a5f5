"""Write Custom Vision style exports and versioned model bundles.

This is the one contract between exporter and runtime: what `write_export` writes,
`edge_runtime.model.bundle.open_bundle` reads (tests check both sides).

    out/shelf/v3/
      model.onnx  labels.txt  metadata_properties.json  cvexport.manifest
      bundle.json              source, iteration, domain, metrics, labels, file hashes
      model.sig                with --sign: a model-signing signature over the other files

The vN folders are the model store's layout (edge_runtime/publish/versions.py): train with
`--out` pointing at the store and `edge-runtime publish STORE/shelf/v3 --name shelf` makes
that version active without a copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.model.bundle import BUNDLE_INFO, MANIFEST
from edge_runtime.model.hashing import file_sha1
from edge_runtime.publish.versions import (
    claim_next_version,
    make_world_readable,
    new_staging,
    stage,
)

from .keys import SigningKey
from .verify import Verified, verify_export


def write_export(
    folder: Path,
    model: bytes,
    labels: Sequence[str],
    metadata: Mapping[str, str],
    domain: str = "Classification",
    flavor: str | None = None,
    iteration_id: str | None = None,
) -> Path:
    """A Custom Vision ONNX export layout, with a manifest whose SHA-1 is the model's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "metadata_properties.json").write_text(json.dumps(dict(metadata), indent=2, sort_keys=True) + "\n")
    manifest = {
        "DomainType": domain, "Platform": "ONNX", "Flavor": flavor, "ExporterVersion": "2.1",
        "ExportedDate": dt.datetime.now(dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S"),
        "IterationId": iteration_id or str(uuid.uuid4()), "ModelFileName": "model.onnx",
        "LabelFileName": "labels.txt", "MetadataPropsFileName": "metadata_properties.json",
        "ModelFileSHA1": hashlib.sha1(model).hexdigest(), "SchemaVersion": "1.0",
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def zip_export(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            zf.write(path, path.name)
    return zip_path


def write_bundle(out: Path, name: str, export: Path, info: Mapping[str, Any],
                 tag_ids: Mapping[str, str] | None = None,
                 signing_key: SigningKey | None = None) -> tuple[Path, Verified]:
    """Copy (or safely unzip) an export into out/name/vN, add bundle.json, and verify it
    loads and runs through the runtime before it is declared good; with a `signing_key`, a
    verified bundle is then signed (vN/model.sig), so that no vN ever appears unsigned. A
    bundle that fails verification is removed. Bundles are readable by every user."""
    root = out / name
    staging = new_staging(root)
    try:
        stage(export, staging)
        files = {p.name: file_sha1(p) for p in sorted(staging.iterdir()) if p.is_file()}
        labels = (staging / "labels.txt").read_text().splitlines() if (staging / "labels.txt").is_file() else []
        bundle_info = {"name": name, "created": dt.datetime.now(dt.timezone.utc).isoformat(), **info,
                       "labels": labels, "files": files}
        if tag_ids:  # the service's tag ids, in label order: predictions then report them as tagId
            bundle_info["tagIds"] = [tag_ids.get(label, "") for label in labels]
        (staging / BUNDLE_INFO).write_text(json.dumps(bundle_info, indent=2, default=str) + "\n")
        verified = verify_export(staging)
        if signing_key is not None:
            signing_key.sign(staging)
        make_world_readable(staging)
        return claim_next_version(root, staging), verified
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
