"""The description of a model update: what a pulled source serves and what a module twin's
desired property holds (pull.py, iotedge.py).

    {"name": "shelf", "version": "2024-06-01", "project": "2d50...",
     "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 4812331,
     "url": "shelf-2024-06-01.zip", "signatureUrl": "shelf-2024-06-01.zip.sig"}

At most 64 KB of JSON. `url` (an export zip) and `signatureUrl` (a model-signing signature)
are absolute, or relative to the description's own URL, http or https only. `size` is in
bytes, an integer, at most models.max_download_mb. Keys the runtime does not know are
ignored, so a server may add its own (a changelog, a date) without breaking older devices;
a known key with a wrong value (a float or negative size, NaN, a hash that is not 64 hex
digits, a name that is not a store name, an ftp:// URL) refuses the whole description with
a PullError in one line.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..capture.sources.uri import redact
from ..errors import PullError, first_line
from .config import URL_SCHEMES, StoreName

MB = 1 << 20
MAX_DESCRIPTION_BYTES = 64 * 1024
SHA256 = re.compile(r"[0-9a-f]{64}")


class Description(BaseModel):
    """What a source or the module twin says the newest model is."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)
    name: StoreName | None = None
    version: str = Field(min_length=1, max_length=128)
    sha256: str
    size: int = Field(gt=0)
    url: str = Field(min_length=1, max_length=4096)
    signature_url: str | None = Field(None, alias="signatureUrl", min_length=1, max_length=4096)
    project: StoreName | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not SHA256.fullmatch(value.lower()):
            raise ValueError("must be 64 hex digits")
        return value.lower()


    @field_validator("version")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text")
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.sha256[:16]}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_description(raw: bytes, base_url: str | None, max_bytes: int, where: str) -> Description:
    """The description in `raw` (JSON), its URLs made absolute against `base_url`, or a
    PullError naming `where` and the first thing wrong."""
    if len(raw) > MAX_DESCRIPTION_BYTES:
        raise PullError(f"{where}: the description is larger than {MAX_DESCRIPTION_BYTES // 1024} KB")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PullError(f"{where}: the description is not JSON ({first_line(exc)})") from None
    return description_from(data, base_url, max_bytes, where)


def description_from(data: Any, base_url: str | None, max_bytes: int, where: str) -> Description:
    """A description from parsed JSON (a module twin's desired property, say)."""
    try:
        desc = Description.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "the description"
        raise PullError(f"{where}: {field}: {error['msg']}") from None
    if desc.size > max_bytes:
        raise PullError(f"{where}: size {desc.size} is over the {max_bytes // MB} MB limit (models.max_download_mb)")
    signature = _absolute(desc.signature_url, base_url, where, "signatureUrl") if desc.signature_url else None
    return desc.model_copy(update={"url": _absolute(desc.url, base_url, where, "url"), "signature_url": signature})


def _absolute(ref: str, base_url: str | None, where: str, field: str) -> str:
    url = urllib.parse.urljoin(base_url, ref) if base_url else ref
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (a port that is not a number raises here)
    except ValueError:
        host = None
    if parts.scheme.lower() not in URL_SCHEMES or not host or any(c.isspace() or not c.isprintable() for c in url):
        raise PullError(f"{where}: {field} {redact(ref)!r} is not an absolute http(s) URL")
    return url
