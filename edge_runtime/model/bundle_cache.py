"""Unpacked export zips, kept in a cache folder named by the zip's SHA-256.

A zip is unpacked once and reused by every later start; a restart killed by a signal
leaves nothing behind that the next start does not reuse or remove. Unpacking goes to a
hidden `.partial-` folder that is renamed into place when complete, so a crash midway
never leaves a half bundle under a real name. The `KEEP` most recently used bundles stay;
older ones and abandoned partial folders are removed whenever a zip is opened.

Where: `bundles/` in the runtime's cache folder (paths.cache_dir).

    folder = unpacked(Path("export.zip"))     # <cache>/bundles/<sha256>/
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import BundleError
from ..paths import cache_dir
from .archive import MAX_TOTAL_BYTES, safe_extract

KEEP = 3  # bundles kept, the one being opened included
PARTIAL_PREFIX = ".partial-"
PARTIAL_STALE_S = 3600  # a partial folder this old belongs to a process that died
COMPLETE = ".edge-runtime-complete"
CHUNK = 1 << 20


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """The folder unpacked bundles go to (created if need be)."""
    root = cache_dir(env) / "bundles"
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_digest(path: Path, limit: int = MAX_TOTAL_BYTES) -> str:
    digest = hashlib.sha256()
    size = 0
    try:
        if path.stat().st_size > limit:
            raise BundleError(f"{path.name}: larger than the {limit}-byte limit for an export")
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BundleError(f"{path.name}: larger than the {limit}-byte limit for an export")
                digest.update(chunk)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def prune(root: Path, keep: int = KEEP) -> None:
    """Remove all but the `keep` most recently used bundles, and stale partial folders."""
    now = time.time()
    done, stale = [], []
    for entry in root.iterdir():
        try:
            mtime = entry.lstat().st_mtime
        except OSError:
            continue
        if entry.name.startswith(PARTIAL_PREFIX):
            if now - mtime > PARTIAL_STALE_S:
                stale.append(entry)
        elif entry.is_dir() and not entry.is_symlink():
            done.append((mtime, entry))
    done.sort(reverse=True)
    for entry in stale + [e for _, e in done[keep:]]:
        shutil.rmtree(entry, ignore_errors=True)


def unpacked(zip_path: Path, root: Path | None = None) -> Path:
    """The folder holding `zip_path`'s files, unpacked now or by an earlier run."""
    root = cache_root() if root is None else root
    target = root / file_digest(zip_path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (target / COMPLETE).is_file():
            _unpack(zip_path, root, target)
        os.utime(target)  # most recently used
        prune(root)
    except OSError as exc:
        raise BundleError(f"cannot unpack {zip_path.name} into {root}: {exc.strerror or exc}") from exc
    return target


def _unpack(zip_path: Path, root: Path, target: Path) -> None:
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=root))
    try:
        safe_extract(zip_path, partial)
        (partial / COMPLETE).write_text(f"{zip_path.name}\n")
        os.chmod(partial, 0o755)
        if target.exists():  # left incomplete by a run that died before the marker
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(partial, target)
        except OSError:
            if not (target / COMPLETE).is_file():  # not merely a concurrent start that won
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
