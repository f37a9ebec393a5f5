"""Version folders: the one layout of a named model's exports, `ROOT/NAME/vN/`.

`edge-export train --out OUT` writes `OUT/PROJECT/vN/` with it, and the model store
(store.py) keeps each published name's versions the same way, so a folder of trained
bundles and a store read alike. A version is written whole or not at all: copied into a
staging folder beside the versions, then renamed to the next free `vN`.

    staging = new_staging(root)
    stage(Path("export.zip"), staging)          # a zip (unpacked safely), a folder, or a lone .onnx
    target = claim_next_version(root, staging)  # root/v4, renamed whole
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import BundleError
from ..model.archive import MAX_TOTAL_BYTES, safe_extract
from ..paths import fsync_dir

DIR_MODE = 0o755
FILE_MODE = 0o644
STAGING_PREFIX = ".staging-"
VERSION = re.compile(r"v([1-9][0-9]{0,8})")


def version_of(path: Path) -> int | None:
    """N for a folder named vN, else None."""
    match = VERSION.fullmatch(path.name)
    return int(match.group(1)) if match else None


def versions(root: Path) -> list[int]:
    """The version numbers under `root`, oldest first."""
    if not root.is_dir():
        return []
    return sorted(n for p in root.iterdir() if p.is_dir() and (n := version_of(p)) is not None)


def next_version(root: Path) -> Path:
    return root / f"v{max(versions(root), default=0) + 1}"


def make_dirs(path: Path) -> None:
    """Create the missing folders of `path` as 0755, whatever the umask; leave existing ones alone."""
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            folder.mkdir(exist_ok=True)
            folder.chmod(DIR_MODE)


def make_world_readable(folder: Path) -> None:
    """Folders 0755, files 0644. A staging folder comes from mkdtemp (0700), and the runtime's
    service usually runs as its own user (systemd DynamicUser), which must be able to read it."""
    for current, _, files in os.walk(folder):
        os.chmod(current, DIR_MODE)
        for file in files:
            os.chmod(os.path.join(current, file), FILE_MODE)


def new_staging(root: Path) -> Path:
    make_dirs(root)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))


def stage(export: Path, staging: Path) -> None:
    """Copy an export into `staging`: the regular files of a folder, a zip unpacked safely
    (no member outside, no bomb), or a lone .onnx with the labels.txt beside it."""
    try:
        if export.is_dir():
            files = [p for p in export.iterdir() if p.is_file() and not p.is_symlink()]
            if sum(p.stat().st_size for p in files) > MAX_TOTAL_BYTES:
                raise BundleError(f"{export}: larger than the {MAX_TOTAL_BYTES}-byte limit for an export")
            for path in files:
                shutil.copy2(path, staging / path.name)
        elif export.suffix.lower() == ".onnx":
            shutil.copy2(export, staging / export.name)
            if (export.parent / "labels.txt").is_file():
                shutil.copy2(export.parent / "labels.txt", staging / "labels.txt")
        elif export.is_file():
            safe_extract(export, staging)
        else:
            raise BundleError(f"{export}: no such file or folder")
    except OSError as exc:
        raise BundleError(f"{export}: {exc.strerror or exc}") from exc


def fsync_tree(folder: Path) -> None:
    """Every file and folder under `folder` on the disk: a rename after this cannot expose a
    file that a power cut would leave empty."""
    for current, _, files in os.walk(folder):
        for file in files:
            with open(os.path.join(current, file), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(current))


def claim_next_version(root: Path, staging: Path) -> Path:
    """Rename `staging` to the next free vN of `root` (a racing writer takes the one after)."""
    for _ in range(100):
        target = next_version(root)
        try:
            os.rename(staging, target)  # fails if another writer made target meanwhile
        except OSError:
            if target.exists():
                continue
            raise
        fsync_dir(root)
        return target
    raise BundleError(f"{root}: could not claim a version folder")
