"""Source URIs: which kind of source one names, whether it parses, and how to show it.

    scheme_of("rtsp://cam/x") == "rtsp";  scheme_of("0") == "device";  scheme_of("a.mp4") == "file"
    redact("rtsp://u:pw@[::1]:554/x?token=abc") == "rtsp://u:***@[::1]:554/x?token=***"

Pure string work, so config validation can use it without opening anything.
"""

from __future__ import annotations

import re
import urllib.parse

from .base import SourceError

URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
PREFIX = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?!//)")
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
# query keys whose values are secrets: token=, access_token=, apikey=, X-Amz-Signature=, ...
SECRET_KEY = re.compile(r"token|key|secret|pass|pwd|auth|sig|credential|session", re.IGNORECASE)
HIDDEN = "***"


def scheme_of(uri: str) -> str:
    """The source kind a URI names: its scheme, "device" for /dev/videoN and indexes, else "file"."""
    uri = uri.strip()
    if uri == "demo":
        return "demo"
    if uri.isdigit() or uri.startswith("/dev/video"):
        return "device"
    match = URL.match(uri) or PREFIX.match(uri)
    if match and len(match["scheme"]) > 1:  # one letter is a Windows drive, not a scheme
        return match["scheme"].lower()
    return "file"


def redact(uri: str) -> str:
    """The URI without passwords, tokens in userinfo, or secret-looking query values.

    Works on the text (no re-encoding), so IPv6 brackets, ports and paths stay as written,
    and it never fails, even on a URI that does not parse.
    """
    match = URL.match(uri)
    if not match:
        return uri
    rest = match["rest"]
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        authority = f"{user}:{HIDDEN}@{host}" if sep else f"{HIDDEN}@{host}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        pairs = []
        for pair in query.split("&"):
            key, eq, _ = pair.partition("=")
            pairs.append(f"{key}={HIDDEN}" if eq and SECRET_KEY.search(urllib.parse.unquote(key)) else pair)
        tail = f"{path}?{'&'.join(pairs)}{hash_}{fragment}"
    return f"{match['scheme']}://{authority}{tail}"


def check_uri(uri: str) -> None:
    """SourceError (one line, redacted) if a network URL cannot be parsed: a bad port, an
    unclosed IPv6 bracket, no host, control characters."""
    if not uri.strip():
        raise SourceError("empty source")
    if scheme_of(uri) not in NETWORK_SCHEMES:
        return
    shown = redact(uri)
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        raise SourceError(f"{shown!r}: control characters in a URL")
    try:
        parts = urllib.parse.urlsplit(uri.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise SourceError(f"{shown}: not a valid URL ({exc})") from None
    if not parts.hostname:
        raise SourceError(f"{shown}: not a valid URL (no host)")
