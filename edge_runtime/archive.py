"""Safe extraction of export zips: no path escapes, no links, bounded sizes."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import BundleError, UnsafeArchiveError

MAX_MEMBERS = 2_000
MAX_TOTAL_BYTES = 2 * 1024**3  # a large float32 detection export is ~100 MB
CHUNK = 1 << 20


def _member_target(dest: Path, info: zipfile.ZipInfo) -> Path:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeArchiveError(f"zip member {info.filename!r} would be written outside the bundle folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"zip member {info.filename!r} is a symbolic link; refusing to extract it")
    target = (dest / name).resolve()
    if not target.is_relative_to(dest):
        raise UnsafeArchiveError(f"zip member {info.filename!r} would be written outside the bundle folder")
    return target


def safe_extract(zip_path: Path, dest: Path, max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
    """Extract `zip_path` into `dest`, refusing escapes, links and oversized content.

    The declared sizes are checked first and the bytes actually written are counted
    too, since a crafted zip can lie about its sizes.
    """
    dest = dest.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise UnsafeArchiveError(f"{zip_path.name}: {len(infos)} members is more than {MAX_MEMBERS}")
            targets = [(_member_target(dest, info), info) for info in infos]
            if sum(info.file_size for info in infos) > max_total_bytes:
                raise UnsafeArchiveError(f"{zip_path.name}: unpacks to more than {max_total_bytes} bytes")
            written = 0
            for target, info in targets:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise UnsafeArchiveError(
                                f"{zip_path.name}: unpacks to more than {max_total_bytes} bytes"
                            )
                        out.write(chunk)
                os.chmod(target, 0o644)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise BundleError(f"{zip_path.name} is not a readable zip file: {exc}") from exc
