"""Safe extraction of export zips: no path escapes, no links, bounded sizes.

Everything about the members is checked before the first byte is written: names (no
escapes, no over-long names, no file that is also a folder), compression methods that
Python can read, no encryption. What still fails while writing (a full disk) is a
BundleError too.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import BundleError, UnsafeArchiveError

MAX_MEMBERS = 2_000
MAX_TOTAL_BYTES = 2 * 1024**3  # a large float32 detection export is ~100 MB
CHUNK = 1 << 20
MAX_NAME_PART = 255  # bytes in one folder or file name, as on ext4
MAX_NAME = 1024  # bytes in a member's whole path
# Python's zipfile reads the whole central directory into ZipInfo objects on opening (about
# 500 bytes of memory per entry), before MAX_MEMBERS can be counted: its size is checked first.
MAX_DIRECTORY_BYTES = MAX_MEMBERS * (46 + MAX_NAME + 256)
EOCD, EOCD64, EOCD64_LOCATOR = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
           zipfile.ZIP_LZMA: "lzma"}


def _member_target(dest: Path, info: zipfile.ZipInfo) -> Path:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeArchiveError(f"zip member {info.filename!r} would be written outside the bundle folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"zip member {info.filename!r} is a symbolic link; refusing to extract it")
    if len(name.encode()) > MAX_NAME or any(len(p.encode()) > MAX_NAME_PART for p in parts) or "\0" in name:
        raise UnsafeArchiveError(f"zip member {info.filename[:60]!r}... has a name longer than a file system allows")
    if info.compress_type not in METHODS:
        raise BundleError(
            f"zip member {info.filename!r} is compressed with method {info.compress_type}; "
            f"repack the zip with one of: {', '.join(METHODS.values())}"
        )
    if info.flag_bits & 0x1:
        raise BundleError(f"zip member {info.filename!r} is encrypted; export zips are not")
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
        check_directory_size(zip_path)
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise UnsafeArchiveError(f"{zip_path.name}: {len(infos)} members is more than {MAX_MEMBERS}")
            targets = [(_member_target(dest, info), info) for info in infos]
            _check_layout(zip_path, dest, targets)
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"{zip_path.name} is not a readable zip file: {exc}") from exc
    except OSError as exc:
        raise BundleError(f"{zip_path.name}: cannot unpack into {dest}: {exc.strerror or exc}") from exc


def check_directory_size(zip_path: Path) -> None:
    """Refuse a central directory too large for MAX_MEMBERS entries, reading only the file's end."""
    with open(zip_path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        tail_start = max(0, size - (22 + 0xFFFF + 20 + 56))  # the end record, its comment, the zip64 records
        f.seek(tail_start)
        tail = f.read()
    at = tail.rfind(EOCD)
    if at < 0 or at + 22 > len(tail):
        return  # not found: zipfile says why
    directory = struct.unpack_from("<I", tail, at + 12)[0]
    locator = at - 20
    if locator >= 0 and tail[locator: locator + 4] == EOCD64_LOCATOR:
        record = struct.unpack_from("<Q", tail, locator + 8)[0] - tail_start
        if record >= 0 and tail[record: record + 4] == EOCD64 and record + 56 <= len(tail):
            directory = max(directory, struct.unpack_from("<Q", tail, record + 40)[0])
    if directory > MAX_DIRECTORY_BYTES:
        raise UnsafeArchiveError(
            f"{zip_path.name}: its list of members is {directory} bytes, more than {MAX_MEMBERS} members need"
        )


def _check_layout(zip_path: Path, dest: Path, targets: list[tuple[Path, zipfile.ZipInfo]]) -> None:
    """No name twice, and no file where another member needs a folder."""
    files = {t for t, info in targets if not info.is_dir()}
    seen: set[Path] = set()
    for target, info in targets:
        if target in seen and not info.is_dir():
            raise UnsafeArchiveError(f"{zip_path.name}: member {info.filename!r} appears twice")
        seen.add(target)
        clash = next((p for p in target.parents if p in files and p.is_relative_to(dest)), None)
        if clash is not None or (info.is_dir() and target in files):
            raise UnsafeArchiveError(
                f"{zip_path.name}: {(clash or target).relative_to(dest)} is both a file and a folder in this zip"
            )
